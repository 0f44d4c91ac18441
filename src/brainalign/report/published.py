"""Published numbers of Pepino et al. (2025) (paper-spec.md section 6), for side-by-side reports.

Only numbers the paper states exactly are ``exact=True``; values read off a figure carry their
reading precision. Keys use the measure names of the aggregate table (``report.aggregate``).
"""

from __future__ import annotations

from dataclasses import dataclass

TASKS = ("NS", "GC", "SC", "ER", "FSD", "ESC", "Overall")
"""Table 1 columns: the six HEAR tasks (z-scored) and Overall."""

MEASURES = (
    "reg_b2021",
    "reg_nh2015",
    "comp_lowfreq",
    "comp_highfreq",
    "comp_envsounds",
    "comp_pitch",
    "comp_speech",
    "comp_music",
    "rsa_b2021",
    "rsa_nh2015",
)
"""Table 1 rows, in the paper's order."""

MEASURE_LABELS = {
    "reg_b2021": "Regression B2021",
    "reg_nh2015": "Regression NH2015",
    "comp_lowfreq": "LF",
    "comp_highfreq": "HF",
    "comp_envsounds": "Broadband",
    "comp_pitch": "Pitch",
    "comp_speech": "Speech",
    "comp_music": "Music",
    "rsa_b2021": "RSA B2021",
    "rsa_nh2015": "RSA NH2015",
}

_TABLE1_ALL = {
    "reg_b2021": (0.640, 0.800, 0.627, 0.633, 0.870, 0.868, 0.895),
    "reg_nh2015": (0.664, 0.819, 0.629, 0.631, 0.866, 0.866, 0.902),
    "comp_lowfreq": (0.807, 0.651, 0.424, 0.408, 0.746, 0.734, 0.760),
    "comp_highfreq": (0.717, 0.788, 0.471, 0.512, 0.795, 0.791, 0.821),
    "comp_envsounds": (0.439, 0.670, 0.451, 0.584, 0.851, 0.850, 0.775),
    "comp_pitch": (0.662, 0.840, 0.620, 0.597, 0.857, 0.862, 0.894),
    "comp_speech": (0.575, 0.734, 0.670, 0.638, 0.807, 0.807, 0.853),
    "comp_music": (0.571, 0.832, 0.527, 0.615, 0.874, 0.860, 0.863),
    "rsa_b2021": (0.641, 0.823, 0.591, 0.526, 0.804, 0.795, 0.842),
    "rsa_nh2015": (0.661, 0.823, 0.537, 0.461, 0.781, 0.768, 0.813),
}
_TABLE1_SUBSET = {
    "reg_b2021": (0.362, 0.468, 0.223, 0.405, 0.662, 0.676, 0.703),
    "reg_nh2015": (0.392, 0.510, 0.217, 0.401, 0.653, 0.668, 0.713),
    "comp_lowfreq": (0.781, 0.368, 0.012, 0.119, 0.558, 0.528, 0.580),
    "comp_highfreq": (0.587, 0.548, 0.020, 0.230, 0.569, 0.566, 0.620),
    "comp_envsounds": (0.149, 0.404, 0.073, 0.400, 0.798, 0.770, 0.648),
    "comp_pitch": (0.266, 0.570, 0.112, 0.334, 0.657, 0.665, 0.647),
    "comp_speech": (0.174, 0.295, 0.373, 0.447, 0.532, 0.560, 0.611),
    "comp_music": (0.374, 0.609, 0.107, 0.396, 0.708, 0.709, 0.724),
    "rsa_b2021": (0.370, 0.477, 0.088, 0.167, 0.459, 0.459, 0.497),
    "rsa_nh2015": (0.455, 0.503, -0.016, 0.038, 0.427, 0.412, 0.437),
}

TABLE1: dict[str, dict[str, dict[str, float]]] = {
    subset: {m: dict(zip(TASKS, rows[m], strict=True)) for m in MEASURES}
    for subset, rows in (("all", _TABLE1_ALL), ("overall_gt_-1", _TABLE1_SUBSET))
}
"""Pearson r of each alignment measure with each task z-score: TABLE1[subset][measure][task]."""

TABLE1_N = {"all": 36, "overall_gt_-1": 32}

FIG6 = {
    "rsacv_nh2015": (0.82, 1.1e-09),
    "rsacv_b2021": (0.84, 1.5e-10),
    "reg_nh2015": (0.90, 5.7e-14),
    "reg_b2021": (0.89, 1.9e-13),
}
"""Fig. 6 annotations: (r, p) of Overall vs each measure over the 36 models."""

FIG3 = {
    ("reg_nh2015", "rsa_nh2015"): 0.92,
    ("reg_b2021", "rsa_b2021"): 0.93,
    ("rsa_nh2015", "rsa_b2021"): 0.98,
    ("reg_nh2015", "reg_b2021"): 1.00,
}
"""Fig. 3 annotations: Pearson r between two measures over the models."""

MUSIC_R2 = {
    "AST": 0.8076,
    "BEATs (B)": 0.8286,
    "BEATs (FT)": 0.8565,
    "BEATs (It 2)": 0.8252,
    "BEATs (It 3)": 0.8054,
    "CNN9 (AS)": 0.6996,
    "CNN9 (MT)": 0.7544,
    "CNN9 (Spk)": 0.6753,
    "CNN9 (Word)": 0.5935,
    "CRN50 (AS)": 0.7998,
    "CRN50 (MT)": 0.7480,
    "CRN50 (Spk)": 0.7049,
    "CRN50 (Word)": 0.7252,
    "DCASE2020": 0.2293,
    "Dasheng (B)": 0.8330,
    "Dasheng (FT)": 0.8173,
    "Dasheng (XL)": 0.8598,
    "Dasheng (XXL)": 0.8496,
    "Deepspeech": 0.2191,
    "ECMAE (AS)": 0.8492,
    "ECMAE (B)": 0.7959,
    "ECMAE (EC)": 0.7683,
    "ECMAE (FMA)": 0.8235,
    "ECMAE (It 2)": 0.8052,
    "ECMAE (L)": 0.8445,
    "ECMAE (L+It 3)": 0.8036,
    "ECMAE (LL)": 0.6061,
    "ECMAE (S)": 0.7834,
    "ECMAE (Spec)": 0.7946,
    "MetricGAN": 0.1322,
    "S2T": 0.5054,
    "Sepformer": 0.3728,
    "VGGish": 0.7779,
    "Wav2Vec 2.0": 0.4312,
    "Zerospeech": 0.3556,
}
"""Fig. 4 Music component R^2 per model label (exact, from the authors' notebook)."""

FIG2_REG_NH2015 = {
    "ECMAE (It 2)": 0.393,
    "ECMAE (L+It 3)": 0.389,
    "ECMAE (B)": 0.388,
    "ECMAE (AS)": 0.386,
    "BEATs (FT)": 0.385,
    "Wav2Vec 2.0": 0.277,
    "S2T": 0.272,
    "Sepformer": 0.249,
    "Deepspeech": 0.191,
    "Zerospeech": 0.177,
    "MetricGAN": 0.122,
    "DCASE2020": 0.083,
}
"""Fig. 2 regression NH2015 R^2, read off the figure (about +-0.002)."""

TOPLINE = {"nh2015": 0.759, "b2021": 0.752}
"""RSA noise ceiling read off Fig. 2 (approximate)."""

SPECTEMP_COMPONENTS = {
    "comp_lowfreq": (0.737, False),
    "comp_highfreq": (0.576, False),
    "comp_envsounds": (0.454, False),
    "comp_pitch": (0.534, False),
    "comp_speech": (0.718, False),
    "comp_music": (0.335676, True),
}
"""Fig. 4 grey line: the SpectroTemporal baseline's component R^2 (value, exact). Music is exact
(the authors' notebook); the others are read off the figure (about +-0.005)."""

READ_OFF = {"fig2": 0.002, "fig4": 0.005}
"""Reading precision of numbers read off a figure (paper-spec section 6)."""


def precision(value: float, exact: bool, read_off: float) -> float:
    """Half a unit of the last printed digit of an exact number; else the read-off precision."""
    if not exact:
        return read_off
    text = repr(float(value))
    decimals = len(text.split(".")[1]) if "." in text and "e" not in text else 6
    return 0.5 * 10.0 ** (-decimals)


@dataclass(frozen=True)
class PublishedValue:
    """One published number with its provenance."""

    what: str
    model: str | None
    measure: str
    value: float
    exact: bool
    source: str

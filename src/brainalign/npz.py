"""Byte-reproducible NPZ files.

``numpy.savez`` stamps every member of the zip with the current time, so two runs that compute
identical arrays write different files, DVC sees a changed output and reruns every downstream
stage, and ``dvc.lock`` differs between machines. These writers produce the same bytes for the
same arrays: fixed member timestamps (1980-01-01, the zip epoch), members in the given order,
the ``.npy`` format of ``numpy.lib.format`` (no pickle: object arrays are refused). The result
loads with ``numpy.load`` like any NPZ.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np

from brainalign.atomic import atomic_path

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def _write(fh: BinaryIO, arrays: Mapping[str, np.ndarray], compress: bool) -> None:
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(fh, mode="w", compression=method) as zf:
        for name, value in arrays.items():
            data = np.asarray(value)
            if not data.flags.c_contiguous:  # (ascontiguousarray would turn 0-d into 1-d)
                data = data.copy(order="C")
            if data.dtype.hasobject:
                raise TypeError(f"NPZ member {name!r}: object arrays would need pickle")
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(
                header, np.lib.format.header_data_from_array_1_0(data))
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            info.compress_type = method
            info.external_attr = 0o644 << 16
            # The size is declared up front, so zipfile writes ZIP64 headers only for members
            # over 4 GiB; with force_zip64 the local headers differ between CPython 3.11.2 and
            # 3.11.7 (the image's Python and uv's), and so would every file's bytes.
            info.file_size = header.tell() + data.nbytes
            with zf.open(info, mode="w") as member:
                member.write(header.getvalue())
                member.write(data.reshape(-1).view(np.uint8))


def npz_bytes(arrays: Mapping[str, np.ndarray], compress: bool = False) -> bytes:
    """The NPZ file holding ``arrays`` (deflate-compressed when ``compress``), as bytes."""
    buf = io.BytesIO()
    _write(buf, arrays, compress)
    return buf.getvalue()


def write_npz(path: str | Path, arrays: Mapping[str, np.ndarray], compress: bool = False) -> None:
    """Atomically write ``arrays`` to ``path`` as a byte-reproducible NPZ (streamed to disk)."""
    with atomic_path(path, suffix=".npz") as tmp, tmp.open("wb") as fh:
        _write(fh, arrays, compress)

"""Sources of crystal structures, one module per format, and :func:`open_source` to pick one.

- :class:`DemoSource`: the demo collection shipped inside pymatgen (no location needed).
- :class:`CollectionSource`: a crystalgrid collection (``crystalgrid fetch``).
- :class:`CifDirectorySource`, :class:`CifFileSource`: CIF files (CGCNN folders included).
- :class:`CsvSource`, :class:`CsvSplitsSource`: CDVAE CSVs (one file, or train/val/test).
- :class:`JsonSource`: JSON / JSON Lines records (the Materials Project's shape).
- :class:`ExtxyzSource`: extended XYZ frames (ASE; ``crystalgrid[ase]``).
- :class:`PoscarSource`: POSCAR / CONTCAR files.
- :class:`AseDbSource`: an ASE database (``crystalgrid[ase]``).
- :class:`OptimadeParquetSource`: Parquet with OPTIMADE fields, LeMat-Bulk's layout
  (``crystalgrid[parquet]``).

Every source keeps the :class:`Source` contract (:func:`crystalgrid.contracts.check_source`);
a new format is one module with a :class:`FileSource` subclass, added by
:func:`register_format` or the ``crystalgrid.sources`` entry point.
"""

from __future__ import annotations

from crystalgrid.sources.ase_db import AseDbSource
from crystalgrid.sources.base import RawRecord, Rejected, Source, parse_record
from crystalgrid.sources.cdvae_csv import CsvSource, CsvSplitsSource
from crystalgrid.sources.cif import CifDirectorySource, CifFileSource
from crystalgrid.sources.collection import CollectionSource, open_collection
from crystalgrid.sources.demo import DemoSource
from crystalgrid.sources.extxyz import ExtxyzSource
from crystalgrid.sources.json_records import JsonSource
from crystalgrid.sources.location import FileSource, RemotePath
from crystalgrid.sources.optimade_parquet import OptimadeParquetSource
from crystalgrid.sources.poscar import PoscarSource
from crystalgrid.sources.registry import FORMATS, formats, open_source, register_format

__all__ = [
    "FORMATS",
    "AseDbSource",
    "CifDirectorySource",
    "CifFileSource",
    "CollectionSource",
    "CsvSource",
    "CsvSplitsSource",
    "DemoSource",
    "ExtxyzSource",
    "FileSource",
    "JsonSource",
    "OptimadeParquetSource",
    "PoscarSource",
    "RawRecord",
    "Rejected",
    "RemotePath",
    "Source",
    "formats",
    "open_collection",
    "open_source",
    "parse_record",
    "register_format",
]

"""asr_kd.utils.manifests.write_cuts: a reader of the manifest being replaced never sees a partial file."""

import gzip
import json

import pytest
from lhotse import CutSet
from lhotse.testing.dummies import dummy_cut

from asr_kd.utils.manifests import write_cuts


def _cuts(n, tag):
    return CutSet.from_cuts([dummy_cut(i).with_id(f"{tag}-{i}") for i in range(n)])


def _ids(path):
    with gzip.open(path, "rt") as f:
        return [json.loads(line)["id"] for line in f]


def test_replaces_whole_and_open_reader_keeps_old(tmp_path):
    path = tmp_path / "x_cuts_train.jsonl.gz"
    write_cuts(_cuts(50, "old"), path)
    reader = gzip.open(path, "rt")  # a lazy training iterating the old manifest
    first = json.loads(reader.readline())["id"]
    write_cuts(_cuts(70, "new"), path)
    rest = [json.loads(line)["id"] for line in reader]  # every old line, none cut off
    reader.close()
    assert [first] + rest == [f"old-{i}" for i in range(50)]
    assert _ids(path) == [f"new-{i}" for i in range(70)]
    assert list(CutSet.from_file(path).ids) == [f"new-{i}" for i in range(70)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary left


def test_failed_write_leaves_the_old_manifest(tmp_path):
    path = tmp_path / "x_cuts_dev.jsonl.gz"
    write_cuts(_cuts(5, "old"), path)

    class Broken:
        def to_file(self, p):
            with gzip.open(p, "wt") as f:
                f.write('{"id": "half')  # a partial line, then the writer dies
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        write_cuts(Broken(), path)
    assert _ids(path) == [f"old-{i}" for i in range(5)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]

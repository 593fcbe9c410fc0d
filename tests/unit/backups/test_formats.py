"""mongodump-compatible formats, against files written by mongodump, bsondump's tests and jobflow-remote."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import bson
import pytest

from reconciler.kinds.backups.archive import ArchiveReader, ArchiveWriter, CollectionMeta, crc_update, to_int64
from reconciler.kinds.backups.bsonio import BsonFormatError, iter_documents
from reconciler.kinds.backups.dumpdir import find_collections, metadata_text, write_collection

DATA = Path(__file__).resolve().parents[2] / "data"
RESTORE = DATA / "mongo-tools" / "mongorestore" / "testdata"
BSONDUMP = DATA / "mongo-tools" / "bsondump" / "testdata"


def _read_archive(path: Path) -> tuple[ArchiveReader, list[tuple[str, bytes]]]:
    stream = open(path, "rb")  # noqa: SIM115 - the reader streams from it; the test process ends soon
    reader = ArchiveReader(stream, path.name)
    return reader, list(reader.documents())


def test_reads_a_mongodump_archive_and_checks_its_crcs():
    reader, documents = _read_archive(RESTORE / "test.bar.archive")
    assert reader.contents.header["server_version"] == "3.4.3"
    assert [meta.namespace for meta in reader.contents.collections] == ["test.bar", "admin.system.version"]
    assert reader.contents.documents == {"admin.system.version": 1, "test.bar": 1}
    assert {namespace for namespace, _ in documents} == {"test.bar", "admin.system.version"}


def test_reads_a_time_series_archive():
    reader, documents = _read_archive(RESTORE / "timeseries_tests" / "dump.archive")
    by_namespace = {meta.namespace: meta for meta in reader.contents.collections}
    assert by_namespace["timeseries_test.foo_ts"].parsed()["type"] == "timeseries"
    assert reader.contents.documents["timeseries_test.system.buckets.foo_ts"] == 10


def test_a_malformed_archive_is_refused_clearly():
    with pytest.raises(BsonFormatError, match="the metadata of test.ixtest is not valid Extended JSON"):
        _read_archive(RESTORE / "bad-format.archive")


@pytest.mark.parametrize("cut", [3, 60, 200, 600, 880])
def test_a_truncated_archive_is_refused(cut):
    data = (RESTORE / "test.bar.archive").read_bytes()[:cut]
    with pytest.raises(BsonFormatError, match="truncated|not a mongodump archive"):
        reader = ArchiveReader(io.BytesIO(data), "cut.archive")
        list(reader.documents())


def test_a_flipped_byte_in_a_document_fails_the_crc():
    data = bytearray((RESTORE / "test.bar.archive").read_bytes())
    reader, documents = _read_archive(RESTORE / "test.bar.archive")
    raw = documents[0][1]
    start = bytes(data).index(raw)
    data[start + len(raw) - 3] ^= 0x01  # inside a string value: framing stays valid
    with pytest.raises(BsonFormatError, match="checksum mismatch for admin.system.version"):
        list(ArchiveReader(io.BytesIO(bytes(data)), "flipped.archive").documents())


def test_rewriting_mongodumps_documents_gives_mongodumps_crcs():
    original, documents = _read_archive(RESTORE / "test.bar.archive")
    buffer = io.BytesIO()
    writer = ArchiveWriter(buffer, server_version="3.4.3", tool_version="reconciler")
    writer.begin(original.contents.collections)
    for meta in original.contents.collections:
        writer.write_collection(meta.db, meta.collection, [raw for ns, raw in documents if ns == meta.namespace])
    buffer.seek(0)
    again = ArchiveReader(buffer, "rewritten.archive")
    assert [(ns, raw) for ns, raw in again.documents()] == sorted(documents, key=lambda item: item[0] != "test.bar")
    # the EOF CRCs match what mongodump wrote
    source = (RESTORE / "test.bar.archive").read_bytes()
    for namespace, raw in documents:
        crc = to_int64(crc_update(0, raw))
        assert bson.encode({"db": namespace.split(".")[0], "collection": namespace.split(".", 1)[1], "EOF": True,
                            "CRC": bson.int64.Int64(crc)}) in source


def test_archive_round_trip_with_gzip_and_empty_collections():
    docs = [bson.encode({"_id": index, "payload": "x" * index}) for index in range(500)]
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb") as compressed:
        writer = ArchiveWriter(compressed, "7.0.0", "reconciler")
        writer.begin([CollectionMeta("meteor", "jobs", metadata_text({"indexes": []})),
                      CollectionMeta("meteor", "empty", metadata_text({"indexes": []}))])
        assert writer.write_collection("meteor", "jobs", docs)[0] == 500
        assert writer.write_collection("meteor", "empty", [])[0] == 0
    buffer.seek(0)
    from reconciler.kinds.backups.archive import open_maybe_gzip

    reader = ArchiveReader(open_maybe_gzip(buffer), "round.archive.gz")
    assert [raw for _, raw in reader.documents()] == docs
    assert reader.contents.documents == {"meteor.jobs": 500}


def test_bson_files_from_bsondump_tests():
    with open(BSONDUMP / "all_types.bson", "rb") as stream:
        documents = list(iter_documents(stream, "all_types.bson", validate=True))
    assert documents and all(bson.decode(raw) for raw in documents)
    with open(BSONDUMP / "partial_file.bson", "rb") as stream, pytest.raises(BsonFormatError, match="truncated"):
        list(iter_documents(stream, "partial_file.bson"))
    for name in ("random_bytes.bson", "bad_type.bson"):
        with open(BSONDUMP / name, "rb") as stream, pytest.raises(BsonFormatError, match=name):
            list(iter_documents(stream, name, validate=True))


def test_reads_mongodump_directory_dumps_with_their_indexes():
    (foo,) = find_collections(RESTORE / "coll_with_index")
    assert (foo.db, foo.collection) == ("test", "foo")
    metadata = foo.read_metadata()
    assert [index["name"] for index in metadata["indexes"]] == ["_id_", "f_1"]
    with foo.open_data() as stream:
        assert len(list(iter_documents(stream, "foo.bson", validate=True))) > 0
    (indexed,) = find_collections(RESTORE / "indextestdump")
    assert indexed.read_metadata()["indexes"][1]["key"]["c"] == bson.Decimal128("0")


def test_reads_a_jobflow_remote_python_dump():
    found = {item.collection: item for item in find_collections(DATA / "jobflow-remote", database="jobflow")}
    assert set(found) == {"jobs", "flows", "jf_auxiliary"}
    assert all(item.db == "jobflow" and item.metadata is None for item in found.values())
    with found["jobs"].open_data() as stream:
        (job,) = [bson.decode(raw) for raw in iter_documents(stream, "jobs.bson.gz", validate=True)]
    assert "uuid" in job and "job" in job


@pytest.mark.parametrize("compress", [False, True])
def test_directory_dump_round_trip(tmp_path, compress):
    docs = [bson.encode({"_id": index, "n": bson.Int64(index)}) for index in range(100)]
    metadata = {"indexes": [{"v": 2, "key": {"_id": 1}, "name": "_id_"}], "collectionName": "jobs",
                "type": "collection"}
    count, files = write_collection(tmp_path, "meteor", "jobs", metadata, iter(docs), compress)
    assert count == 100 and len(files) == 2 and all(len(item.sha256) == 64 for item in files)
    (found,) = find_collections(tmp_path)
    assert found.read_metadata() == metadata
    with found.open_data() as stream:
        assert list(iter_documents(stream, "jobs")) == docs
    assert (tmp_path / files[0].path).stat().st_size == files[0].bytes

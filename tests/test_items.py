"""The item model (``_items``, row 1): what each kind of download_many item means.

Tables of ``(item, expected)`` rows for the pure parser, then real astropy
rows and pyvo records (when those packages are installed): the library
never imports either, it reads them by duck typing.
"""

from __future__ import annotations

import json

import pytest

from pyvo_dl import _items
from pyvo_dl._items import Source, parse_item

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

HTTP = "https://heasarc.example/FTP/chandra/data/byobsid/2/3052/primary/evt2.fits.gz"
S3 = "s3://nasa-heasarc/chandra/data/byobsid/2/3052/primary/evt2.fits.gz"
CLOUD = {"aws": {"bucket_name": "nasa-irsa-wise", "key": "wise/a/b.fits", "region": "us-west-2"}}


def _sources(item: object) -> list[tuple[str, str | None]]:
    parsed = parse_item(item, 0)
    assert parsed.error is None, parsed.error
    return [tuple(source) for source in parsed.sources]


@pytest.mark.parametrize(
    ("item", "sources", "local"),
    [
        (HTTP, [(HTTP, None)], None),
        ((HTTP, "out/x.fits"), [(HTTP, None)], "out/x.fits"),
        ([HTTP, S3], [(HTTP, None), (S3, None)], None),
        ((HTTP, S3), [(HTTP, None), (S3, None)], None),  # two sources, not a pair
        (([HTTP, S3], "x.fits"), [(HTTP, None), (S3, None)], "x.fits"),
        ({"source": S3}, [(S3, None)], None),
        (
            {"source": [S3, HTTP], "local_filepath": "a/b.fits"},
            [(S3, None), (HTTP, None)],
            "a/b.fits",
        ),
        ({"access_url": HTTP, "obs_id": "3052"}, [(HTTP, None)], None),
        # A catalogue's "source" column (a source name) beside access_url: a row.
        ({"source": "NGC 1068", "access_url": HTTP}, [(HTTP, None)], None),
        ({"ACCESS_URL": HTTP}, [(HTTP, None)], None),  # the column's case as the table has it
        ({"access_url": HTTP, "aws": S3}, [(HTTP, None), (S3, None)], None),
        (
            {"access_url": HTTP, "cloud_access": json.dumps(CLOUD)},
            [(HTTP, None), ("s3://nasa-irsa-wise/wise/a/b.fits", "us-west-2")],
            None,
        ),
        (
            {"access_url": b"https://h/x.fits", "cloud_access": CLOUD},  # bytes, a dict
            [("https://h/x.fits", None), ("s3://nasa-irsa-wise/wise/a/b.fits", "us-west-2")],
            None,
        ),
        (
            {"access_url": "", "cloud_access": json.dumps([CLOUD, {"gcp": {}}])},
            [("s3://nasa-irsa-wise/wise/a/b.fits", "us-west-2")],
            None,
        ),
        (  # the same object twice: once, with the region
            {"aws": "s3://nasa-irsa-wise/wise/a/b.fits", "cloud_access": CLOUD},
            [("s3://nasa-irsa-wise/wise/a/b.fits", "us-west-2")],
            None,
        ),
        (
            {"access_url": HTTP, "cloud_access": {"aws": [CLOUD["aws"], CLOUD["aws"]]}},
            [(HTTP, None), ("s3://nasa-irsa-wise/wise/a/b.fits", "us-west-2")],
            None,
        ),
    ],
)
def test_items_and_their_sources(item: object, sources: list[Any], local: str | None) -> None:
    assert _sources(item) == sources
    assert parse_item(item, 0).local == local


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (42, "item 7 must be a URL, an s3:// URI, a list of equivalent sources"),
        (None, "item 7 must be"),
        (b"https://h/x.fits", "item 7 must be"),
        ((HTTP, 5), "item 7: local path 5 is not a path"),
        ((HTTP, ""), "item 7: local path '' is not a usable path"),
        ((HTTP, "a", "b"), "item 7 must be"),
        ((), "item 7 must be"),
        ([HTTP, 3], "item 7: local path 3 is not a path"),
        ([HTTP, S3, 3], "item 7 must be"),
        ([[HTTP, 3], "x"], "item 7: a source must be a URL or s3:// URI string, not 3"),
        ({"source": HTTP, "size": 4}, "unknown key 'size'"),
        ({"local_filepath": "x"}, "no 'source'"),
        ({"source": []}, "item 7: the source must be a URL or s3:// URI string, or a non-empty"),
        ({"source": HTTP, "checksum": "sha256:zz"}, "item 7: checksum 'sha256:zz'"),
        ({"source": HTTP, "checksum": 5}, "item 7: checksum must be a string"),
        ({"access_url": ""}, "row 7 has no usable source (no access_url, cloud_access or aws"),
        ({"access_url": "ftp://h/x"}, "access_url 'ftp://h/x' is not an http(s):// URL"),
        ({"cloud_access": "{not json"}, "cloud_access '{not json' is not JSON"),
        ({"cloud_access": '{"aws": {"bucket_name": "b"}}'}, "names no AWS bucket and key"),
        ({"aws": "https://h/x"}, "aws column 'https://h/x' is not an s3:// URI"),
    ],
)
def test_every_malformed_item_is_its_own_error(item: object, message: str) -> None:
    parsed = parse_item(item, 7)
    assert isinstance(parsed.error, ValueError)
    assert message in str(parsed.error)
    assert parsed.sources == () or parsed.error is not None


class _Broken:
    """A row whose own methods fail: its error is that item's, not the call's."""

    def keys(self) -> list[str]:
        raise RuntimeError("the table went away")


def test_a_row_that_raises_is_an_error_item() -> None:
    parsed = parse_item(_Broken(), 2)
    assert isinstance(parsed.error, ValueError)
    assert "item 2" in str(parsed.error)
    assert "the table went away" in str(parsed.error)


def test_a_bad_region_is_left_out_but_the_bucket_kept() -> None:
    cloud = {"aws": {"bucket_name": "b", "key": "k.fits", "region": "us-west-2.evil.example"}}
    assert _sources({"cloud_access": cloud}) == [("s3://b/k.fits", None)]


@pytest.mark.parametrize(
    ("prefer", "expected"),
    [
        (None, ["https://a/x", "s3://b/x", "http://c/x", "s3://d/x"]),
        ("cloud", ["s3://b/x", "s3://d/x", "https://a/x", "http://c/x"]),
        ("on-prem", ["https://a/x", "http://c/x", "s3://b/x", "s3://d/x"]),
    ],
)
def test_order_sources_keeps_the_order_within_each_kind(
    prefer: str | None, expected: list[str]
) -> None:
    given = [Source(uri, None) for uri in ("https://a/x", "s3://b/x", "http://c/x", "s3://d/x")]
    assert [s.uri for s in _items.order_sources(given, prefer)] == expected


@pytest.mark.parametrize("bad", ["clouds", "s3", 1, "on_prem "])
def test_parse_prefer_names_the_setting_and_value(bad: object) -> None:
    with pytest.raises(ValueError, match=rf"\$PYVO_DL_PREFER must be 'cloud'.*not {bad!r}"):
        _items.parse_prefer(bad, "$PYVO_DL_PREFER")


@pytest.mark.parametrize(
    ("sources", "name"),
    [
        (["https://h/datalink?ID=ivo://x/7", "s3://b/obs/7/image.fits"], "image.fits"),
        (["https://h/a/x.fits", "s3://b/y.fits"], "x.fits"),
        (["https://h/cutout", "https://h2/cutout2"], "cutout"),
        (["https://h/dir/", "s3://b/prefix/"], None),
    ],
)
def test_one_name_for_all_the_sources(sources: list[str], name: str | None) -> None:
    assert _items.name_for_sources([Source(uri, None) for uri in sources]) == name


def test_one_item_where_items_are_expected() -> None:
    assert _items.is_one_item("https://h/x")
    assert _items.is_one_item({"access_url": "https://h/x"})
    assert not _items.is_one_item([{"access_url": "https://h/x"}])
    assert not _items.is_one_item(iter(["https://h/x"]))


# -- real tables -------------------------------------------------------------------------


def test_astropy_rows_and_a_whole_table() -> None:
    table_module = pytest.importorskip("astropy.table", reason="astropy is not installed")
    table = table_module.Table(
        {
            "obs_id": ["a", "b", "c", "d"],
            "access_url": [HTTP, "https://h/b.fits", "", "https://h/d.fits"],
            "cloud_access": ["", json.dumps(CLOUD), "", "not json"],
            "aws": [S3, "", "", ""],
        },
        masked=True,
    )
    table["access_url"].mask[2] = True
    assert _items.is_one_item(table[0])
    assert not _items.is_one_item(table)
    parsed = [parse_item(row, i) for i, row in enumerate(table)]
    assert [tuple(s) for s in parsed[0].sources] == [(HTTP, None), (S3, None)]
    assert [tuple(s) for s in parsed[1].sources] == [
        ("https://h/b.fits", None),
        ("s3://nasa-irsa-wise/wise/a/b.fits", "us-west-2"),
    ]
    assert isinstance(parsed[2].error, ValueError)  # masked access_url, nothing else
    assert "row 2 has no usable source" in str(parsed[2].error)
    assert [tuple(s) for s in parsed[3].sources] == [("https://h/d.fits", None)]
    assert parsed[3].notes == ("cloud_access 'not json' is not JSON",)


_VOTABLE = """<?xml version="1.0"?>
<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">
 <RESOURCE type="results"><TABLE>
  <FIELD name="obs_id" datatype="char" arraysize="*"/>
  <FIELD name="URL" datatype="char" arraysize="*" ucd="meta.ref.url;meta.dataset"/>
  <FIELD name="cloud_access" datatype="char" arraysize="*"/>
  <DATA><TABLEDATA>
   <TR><TD>1</TD><TD>https://h/one.fits</TD><TD>{cloud}</TD></TR>
   <TR><TD>2</TD><TD></TD><TD></TD></TR>
  </TABLEDATA></DATA>
 </TABLE></RESOURCE>
</VOTABLE>
"""


def test_pyvo_records_by_their_getdataurl(tmp_path: Any) -> None:
    """The access URL is found as pyvo finds it (here a column named URL, by its UCD)."""
    dal = pytest.importorskip("pyvo.dal", reason="pyvo is not installed")
    votable = pytest.importorskip("astropy.io.votable")
    path = tmp_path / "result.xml"
    cloud = json.dumps(CLOUD).replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")
    path.write_text(_VOTABLE.replace("{cloud}", cloud))
    results = dal.DALResults(votable.parse(str(path)))
    records = list(results)
    assert records[0].getdataurl() == "https://h/one.fits"
    assert _items.is_one_item(records[0])
    first, second = (parse_item(record, i) for i, record in enumerate(records))
    assert [tuple(s) for s in first.sources] == [
        ("https://h/one.fits", None),
        ("s3://nasa-irsa-wise/wise/a/b.fits", "us-west-2"),
    ]
    assert isinstance(second.error, ValueError)

import pytest

from ovt.acquire.properties import parse_properties


def test_unicode_escapes_and_latin1_bytes():
    data = "name#1=Caf\\u00e9 chair\nname#2=Sof\xe1\nname#3=\\u4e2d\\u6587\n".encode("iso-8859-1")
    props = parse_properties(data)
    assert props == {"name#1": "Café chair", "name#2": "Sofá", "name#3": "中文"}


def test_surrogate_pair_escapes_become_one_code_point():
    assert parse_properties("k=\\ud83d\\ude00")["k"] == "\U0001f600"


def test_separators_comments_and_continuations():
    text = (
        "# comment\n! also a comment\n\n"
        "a = 1\n"
        "b:2\n"
        "c 3\n"
        "d=first \\\n    second\n"
        "e=ends with backslash \\\\\n"
        "key\\ with\\ spaces=v\n"
        "empty=\n"
        "modelRotation#7=1 0 0 0 0 1 0 -1 0\n"
    )
    p = parse_properties(text)
    assert p["a"] == "1" and p["b"] == "2" and p["c"] == "3"
    assert p["d"] == "first second"
    assert p["e"] == "ends with backslash \\"
    assert p["key with spaces"] == "v"
    assert p["empty"] == ""
    assert p["modelRotation#7"] == "1 0 0 0 0 1 0 -1 0"
    assert "# comment" not in p


def test_malformed_unicode_escape_is_a_clear_error():
    with pytest.raises(ValueError, match="malformed"):
        parse_properties("k=\\u12x4")

"""The one XML parsing path of jtrix: every XML input goes through :func:`parse_untrusted`.

Policy (README, "How untrusted XML is treated"; docs/architecture.md, "Pitfalls", lxml):

* a size cap (``max_bytes``) checked before the parser sees a byte;
* no DTD at all: any ``<!DOCTYPE`` is refused outright (so no entity can be
  declared, internal or external, and no billion-laughs expansion can start);
* the parser itself resolves no entities, loads no DTD, touches no network and
  refuses huge trees, as a second line of defence;
* UTF-8 only: a document declaring any other encoding is refused (the byte scan for DOCTYPE
  above assumes an ASCII-compatible encoding, and the README promises UTF-8);
* a nesting limit (``max_depth``);
* comments and processing instructions are dropped (they are never meaningful).

Errors are :class:`~warrants.errors.XmlRejected` with the message
``source:line: cause``. The cause never quotes the document's text: the error
messages of libxml2 are reduced to their kind, so a hostile document cannot
make us echo a file it tried to include.

:func:`validate` checks a parsed document against one of the XSD schemas
shipped in ``warrants/schemas/`` and reports ``source:line: what was expected``.
"""

from __future__ import annotations

import re
import threading
from importlib import resources

from lxml import etree

from warrants.errors import BadInput, XmlRejected

DEFAULT_MAX_BYTES = 1_000_000
DEFAULT_MAX_DEPTH = 64

_DOCTYPE = re.compile(rb"<!\s*DOCTYPE", re.IGNORECASE)
_ENTITY = re.compile(rb"<!\s*ENTITY", re.IGNORECASE)
#: the encoding an XML declaration names (a BOM may precede it)
_DECLARED_ENCODING = re.compile(rb"(?:\xef\xbb\xbf)?\s*<\?xml\s[^>]*?\bencoding\s*=\s*[\"']([^\"']*)[\"']")
_NS_BRACES = re.compile(r"\{(?:urn|https?):[^}]*\}")

_local = threading.local()  # lxml parsers and schemas are used by one thread at a time


def _parser() -> etree.XMLParser:
    parser = getattr(_local, "parser", None)
    if parser is None:
        parser = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            huge_tree=False,
            remove_comments=True,
            remove_pis=True,
            remove_blank_text=False,
            collect_ids=False,
            strip_cdata=True,
        )
        _local.parser = parser
    return parser


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _syntax_cause(err: etree.XMLSyntaxError) -> str:
    """A content-free description of a libxml2 syntax error."""
    msg = (err.msg or "").split(",")[0].split("(")[0].strip()
    msg = re.sub(r"n't\b", " not", msg)  # "Couldn't" is not a quote
    # Drop anything quoted or after a colon: libxml2 sometimes cites names or text.
    msg = msg.split(":")[0].split("'")[0].split('"')[0].strip()
    msg = re.sub(r"\s+line \d+$", "", msg)
    msg = "".join(ch for ch in msg if ch.isprintable())[:100]
    return f"not well-formed XML ({msg})" if msg else "not well-formed XML"


def parse_untrusted(
    data: bytes,
    source: str,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> etree._Element:
    """Parse ``data`` (an untrusted XML document) and return its root element.

    Raises :class:`XmlRejected` (``source:line: cause``) for oversize input, any
    DOCTYPE or entity declaration, malformed XML, or nesting deeper than
    ``max_depth``.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("parse_untrusted expects bytes")
    data = bytes(data)
    if len(data) > max_bytes:
        raise XmlRejected(f"{source}:1: document is {len(data)} bytes, over the {max_bytes}-byte limit")
    if not data.strip():
        raise XmlRejected(f"{source}:1: empty document")
    for pattern, what in ((_DOCTYPE, "DOCTYPE"), (_ENTITY, "entity declaration")):
        m = pattern.search(data)
        if m:
            raise XmlRejected(f"{source}:{_line_of(data, m.start())}: {what} refused (DTDs are not allowed)")
    if b"\x00" in data[:4] or data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        # UTF-16/32 would hide a DOCTYPE from the byte scan above: accept UTF-8 only.
        raise XmlRejected(f"{source}:1: only UTF-8 documents are accepted")
    declared = _DECLARED_ENCODING.match(data)
    if declared and declared.group(1).lower() not in (b"utf-8", b"utf8"):
        raise XmlRejected(f"{source}:1: only UTF-8 documents are accepted (the declaration names another encoding)")
    try:
        root = etree.fromstring(data, parser=_parser())
    except etree.XMLSyntaxError as err:
        line = err.lineno or (err.position[0] if err.position else 1) or 1
        raise XmlRejected(f"{source}:{line}: {_syntax_cause(err)}") from None
    except ValueError:
        raise XmlRejected(f"{source}:1: not well-formed XML") from None
    if root is None:
        raise XmlRejected(f"{source}:1: no root element")
    docinfo = root.getroottree().docinfo
    if (docinfo.encoding or "UTF-8").lower() not in ("utf-8", "utf8"):  # second line: what libxml2 decoded
        raise XmlRejected(f"{source}:1: only UTF-8 documents are accepted")
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise XmlRejected(f"{source}:1: DOCTYPE refused (DTDs are not allowed)")
    depth = 0
    for event, el in etree.iterwalk(root, events=("start", "end")):
        if event == "start":
            depth += 1
            if depth > max_depth:
                raise XmlRejected(f"{source}:{el.sourceline or 1}: elements nested deeper than {max_depth} levels")
            if isinstance(el, etree._Entity):
                raise XmlRejected(f"{source}:{el.sourceline or 1}: entity reference refused")
        else:
            depth -= 1
    return root


def _schema(name: str) -> etree.XMLSchema:
    cache = getattr(_local, "schemas", None)
    if cache is None:
        cache = _local.schemas = {}
    schema = cache.get(name)
    if schema is None:
        if not re.fullmatch(r"[a-z][a-z0-9_-]*\.xsd", name):
            raise ValueError(f"bad schema name {name!r}")
        data = resources.files("warrants").joinpath("schemas", name).read_bytes()
        schema_root = parse_untrusted(data, f"warrants/schemas/{name}")
        schema = etree.XMLSchema(schema_root)
        cache[name] = schema
    return schema


def _schema_cause(message: str) -> str:
    message = _NS_BRACES.sub("", message)
    return " ".join(message.split())[:300]


def validate(
    root: etree._Element,
    schema_name: str,
    source: str,
    error: type[BadInput] = XmlRejected,
) -> None:
    """Validate ``root`` against ``warrants/schemas/<schema_name>``.

    Raises ``error`` (default :class:`XmlRejected`) with ``source:line: ...``
    naming the first violation and what was expected there.
    """
    schema = _schema(schema_name)
    if schema.validate(root):
        return
    entry = schema.error_log.last_error
    first = schema.error_log[0] if len(schema.error_log) else entry
    line = (first.line if first is not None else 0) or root.sourceline or 1
    cause = _schema_cause(first.message if first is not None else "schema validation failed")
    raise error(f"{source}:{line}: {cause}")

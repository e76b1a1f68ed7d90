"""XML for xes: immutable elements, a serializer and the sans-IO XMPP stream parser.

Layer 1 (pure values, no I/O). See ``element.py`` and ``stream.py``; ``ns.py`` holds namespace
names.
"""

from xes.xml.element import E, Element, escape_attr, escape_text, serialize
from xes.xml.stream import (
    STREAM_CLOSE,
    STREAM_ERROR_CONDITIONS,
    ElementReceived,
    StreamClosed,
    StreamEvent,
    StreamOpened,
    XmlLimits,
    XmlStream,
    XmlStreamError,
    parse_fragment,
    stream_error,
    stream_header,
)

__all__ = [
    "STREAM_CLOSE",
    "STREAM_ERROR_CONDITIONS",
    "E",
    "Element",
    "ElementReceived",
    "StreamClosed",
    "StreamEvent",
    "StreamOpened",
    "XmlLimits",
    "XmlStream",
    "XmlStreamError",
    "escape_attr",
    "escape_text",
    "parse_fragment",
    "serialize",
    "stream_error",
    "stream_header",
]

"""Plain text from a MediaWiki XML dump: article pages and a markup stripper.

The stripper keeps the prose of an article and drops what a reader does not see as running
text: templates, references, tables, comments, files, categories, interlanguage links and the
trailing reference sections. It is a set of regular-expression passes, not a MediaWiki parser,
so rare constructs (a template with a lone brace in an argument, for example) may leave a few
stray characters behind.
"""

import html
import io
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator

# Sections that hold citations and link lists rather than prose; dropped with their content.
_DROPPED_SECTIONS = {
    "references", "notes", "footnotes", "citations", "sources", "bibliography",
    "external links", "see also", "further reading",
}  # fmt: skip
# Link prefixes whose target is not shown as text: media, categories and other namespaces.
_HIDDEN_LINK_PREFIXES = {"file", "image", "media", "category"}
# Tags whose content is not prose and is dropped together with the tags.
_DROPPED_TAGS = ("ref", "gallery", "timeline", "imagemap", "score", "math", "syntaxhighlight")

_COMMENT = re.compile(r"<!--.*?(?:-->|$)", re.DOTALL)
_DROPPED_ELEMENT = re.compile(
    r"<(" + "|".join(_DROPPED_TAGS) + r")\b[^>]*?(?:/>|>.*?</\1\s*>)", re.DOTALL | re.IGNORECASE
)
_INNER_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")
_INNER_TABLE = re.compile(r"\{\|(?:(?!\{\|).)*?\|\}", re.DOTALL)
# An internal link with no other "[[" or "]]" inside; single brackets may occur in a label.
_INNER_LINK = re.compile(r"\[\[((?:[^\[\]]|\[(?!\[)|\](?!\]))*)\]\]")
_EXTERNAL_LINK = re.compile(r"\[(?:https?|ftp)://[^\s\]]+\s*([^\]]*)\]")
_HEADING = re.compile(r"^(={1,6})\s*(.*?)\s*\1\s*$", re.MULTILINE)
_LINE_BREAK_TAG = re.compile(r"<br\s*/?>", re.IGNORECASE)
_ANY_TAG = re.compile(r"</?[A-Za-z][^<>]*>")
_BOLD_ITALIC = re.compile(r"'{2,}")
_MAGIC_WORD = re.compile(r"__[A-Z]+__")
_LIST_MARKER = re.compile(r"^[*#:;]+\s*", re.MULTILINE)
_EMPTY_BRACKETS = re.compile(r"\(\s*[,;]?\s*\)")
_SPACES = re.compile(r"[ \t\u00a0]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def iter_articles(xml_bytes: bytes) -> Iterator[tuple[str, str]]:
    """Yield (title, wiki markup) of each article page (namespace 0, not a redirect) in a dump."""
    for _, element in ElementTree.iterparse(io.BytesIO(xml_bytes), events=("end",)):
        if _local_name(element.tag) != "page":
            continue
        fields = {_local_name(child.tag): child for child in element}
        namespace = fields.get("ns")
        is_article = namespace is not None and (namespace.text or "").strip() == "0"
        if is_article and "redirect" not in fields:
            revision = fields.get("revision")
            text = None
            if revision is not None:
                text = next((c.text for c in revision if _local_name(c.tag) == "text"), None)
            yield fields["title"].text or "", text or ""
        element.clear()


def _local_name(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def strip_wikitext(markup: str) -> str:
    """Return the readable prose of MediaWiki markup, with headings kept as plain lines."""
    text = _COMMENT.sub("", markup)
    text = _DROPPED_ELEMENT.sub("", text)
    text = _remove_nested(text)
    text = _replace_links(text)
    text = _EXTERNAL_LINK.sub(lambda match: match.group(1), text)
    text = _drop_sections(text)
    text = _HEADING.sub(lambda match: match.group(2), text)
    text = _LINE_BREAK_TAG.sub("\n", text)
    text = _ANY_TAG.sub("", text)
    text = html.unescape(text)
    text = _BOLD_ITALIC.sub("", text)
    text = _MAGIC_WORD.sub("", text)
    text = _LIST_MARKER.sub("", text)
    return _tidy(text)


def _remove_nested(text: str) -> str:
    """Remove templates and tables from the innermost outwards, until none is left."""
    while True:
        reduced = _INNER_TEMPLATE.sub("", text)
        reduced = _INNER_TABLE.sub("", reduced)
        if reduced == text:
            break
        text = reduced
    # Unbalanced leftovers of broken markup.
    return text.replace("{{", "").replace("}}", "")


def _replace_links(text: str) -> str:
    """Replace internal links by their label, from the innermost outwards (captions hold links)."""
    while True:
        replaced = _INNER_LINK.sub(_link_text, text)
        if replaced == text:
            return replaced
        text = replaced


def _link_text(match: re.Match) -> str:
    inner = match.group(1)
    target, _, label = inner.partition("|")
    target = target.strip()
    if target.startswith(":"):
        # A leading colon shows a category or file link as a normal link.
        return (label.rsplit("|", 1)[-1] if label else target[1:]).strip()
    prefix, has_colon, _ = target.partition(":")
    prefix = prefix.strip().lower()
    if has_colon and prefix in _HIDDEN_LINK_PREFIXES:
        return ""
    if has_colon and not label and re.fullmatch(r"[a-z]{2,3}(-[a-z]+)?", prefix):
        return ""  # interlanguage link
    return (label.rsplit("|", 1)[-1] if label else target).strip()


def _drop_sections(text: str) -> str:
    """Drop each reference-like section up to the next heading of the same or a higher level."""
    output = []
    dropping_level = 0
    for line in text.split("\n"):
        heading = _HEADING.match(line)
        if heading:
            level = len(heading.group(1))
            if dropping_level and level > dropping_level:
                continue
            title = heading.group(2).strip().lower()
            dropping_level = level if title in _DROPPED_SECTIONS else 0
        if not dropping_level:
            output.append(line)
    return "\n".join(output)


def _tidy(text: str) -> str:
    text = _EMPTY_BRACKETS.sub("", text)
    lines = []
    for line in text.split("\n"):
        line = _SPACES.sub(" ", line).strip()
        # Lines of stray table or template syntax carry no prose.
        if line and not re.fullmatch(r"[|!{}\-=\s]*", line):
            lines.append(line)
        else:
            lines.append("")
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()

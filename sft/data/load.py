"""Read instruction records from a file, a URL, a Hub data set or the built-in synthetic set.

Whatever the source and its field names, the result is a list of records with string
`instruction`, `input` and `output` keys (plus any other fields the source had, unchanged), and
only after the whole source has been checked: a bad source raises one DataError listing all of
its problems.
"""

import base64
import gzip
import hashlib
import http.client
import json
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sft.data.validate import (
    ALPACA_MAP,
    FIELDS,
    PREFERENCE_FIELDS,
    check_preference_records,
    check_records,
    is_preference_layout,
    json_object,
)
from sft.errors import DataError, SFTError
from sft.paths import atomic_write_bytes, cache_dir

SYNTH_NAME = "sft-synth"
SYNTH_DEFAULT_SIZE = 1200
SYNTH_SEED = 0
FORMATS: dict[str, dict[str, str]] = {
    "alpaca": ALPACA_MAP,
    "dolly": {"instruction": "instruction", "input": "context", "output": "response"},
}
# What a source must hold: instruction records, preference pairs (prompt, chosen, rejected), or whichever it does.
LAYOUTS = ("instruction", "preference", "auto")
JSONL_SUFFIXES = {".jsonl", ".ndjson"}
FILE_SUFFIXES = JSONL_SUFFIXES | {".json", ".txt", ".gz"}
URL_SCHEMES = ("http://", "https://")
HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?(:[\w.-]+)?")
DOWNLOAD_TIMEOUT_S = 30


@dataclass
class RawSource:
    """Records as parsed, before validation, with how messages should name their source."""

    records: Any
    name: str
    lines: Sequence[int] | None = None  # line each record starts on, for files


class RecordLines(Sequence[int]):
    """The line each record of a JSON array starts on, found only when a message first asks for one.

    Finding them means scanning the whole text once more; valid data never needs them, so it never pays.
    """

    def __init__(self, text: str):
        self.text: str | None = text
        self.found: list[int] = []

    def lines(self) -> list[int]:
        if self.text is not None:
            self.found, self.text = record_lines(self.text), None
        return self.found

    def __len__(self) -> int:
        return len(self.lines())

    def __getitem__(self, index: Any) -> Any:
        return self.lines()[index]


def load_records(
    source: str,
    format: str = "auto",
    field_map: dict[str, str] | None = None,
    sha256: str | None = None,
    tokenizer: Any = None,
    max_length: int | None = None,
    template: Any = None,
    length_option: str = "--max-length",
    token_lengths: Callable[[list[dict[str, Any]]], Sequence[int]] | None = None,
    layout: str = "instruction",
) -> list[dict[str, str]]:
    """Validated records in Alpaca form from `source`; raises DataError listing every problem.

    `source` is a JSON array or JSON Lines file, an http(s) URL (downloaded once into the cache,
    checked against `sha256` when given), a Hub data set id (`owner/name`, optionally
    `owner/name:split`), or `sft-synth[:N]`. `format` is "auto", "alpaca", "dolly" or a mapping
    such as "instruction=question,output=answer"; `field_map` maps target fields to source fields.
    With a `tokenizer` and `max_length`, records longer than that (as training renders them with
    `template`) are problems too; `length_option` is how messages name that limit, and
    `token_lengths`, given, measures them (see `validate.collect_problems`).

    `layout` says what the source must hold: `instruction` records (a file of preference pairs is refused in
    one line), `preference` pairs (prompt, chosen, rejected: TRL's DPO layout, the pairs kept as they are),
    or `auto`, either, told apart by their keys (`sft data check`).
    """
    return load_checked(
        source,
        format,
        field_map,
        sha256,
        tokenizer,
        max_length,
        template,
        length_option,
        token_lengths=token_lengths,
        layout=layout,
    )[1]


def load_checked(
    source: str,
    format: str = "auto",
    field_map: dict[str, str] | None = None,
    sha256: str | None = None,
    tokenizer: Any = None,
    max_length: int | None = None,
    template: Any = None,
    length_option: str = "--max-length",
    duplicates: bool = True,
    token_lengths: Callable[[list[dict[str, Any]]], Sequence[int]] | None = None,
    layout: str = "instruction",
) -> tuple[list[Any], list[dict[str, str]]]:
    """`load_records`, also returning the records as parsed (for writing a file back in its own field names);
    `duplicates=False` lets exact repeats pass."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
    raw = read_source(str(source), sha256)
    if source_layout(raw, layout) == "preference":
        if (format or "auto").strip().lower() != "auto" or field_map:
            raise SFTError(
                f"{raw.name}: holds preference pairs, whose fields are always named {', '.join(PREFERENCE_FIELDS)}; "
                "--format and field maps (dataset_format, dataset_field_map) apply to instruction records only"
            )
        problems, valid = check_preference_records(
            raw.records, raw.name, tokenizer, max_length, raw.lines, length_option, duplicates
        )
        if problems:
            raise DataError(problems)
        return raw.records, [valid[index] for index in range(len(raw.records))]
    mapping = resolve_mapping(format, field_map, raw.records, raw.name)
    problems, valid = check_records(
        raw.records,
        raw.name,
        mapping,
        tokenizer=tokenizer,
        max_length=max_length,
        template=template,
        lines=raw.lines,
        length_option=length_option,
        duplicates=duplicates,
        token_lengths=token_lengths,
    )
    if problems:
        raise DataError(problems)
    return raw.records, [valid[index] for index in range(len(raw.records))]


def read_source(source: str, sha256: str | None = None) -> RawSource:
    """Parse `source` into raw records, without judging them yet."""
    if source == SYNTH_NAME or source.startswith(SYNTH_NAME + ":"):
        reject_pin(source, sha256)
        return RawSource(synth_source(source), source)
    if is_url(source):
        return read_file(download(source, sha256), display_source(source))
    path = Path(source).expanduser()
    if path.is_file():
        if sha256:
            verify_sha256(path, normalise_sha256(sha256), source)
        return read_file(path, source)
    if path.is_dir():
        raise SFTError(f"{source} is a directory; pass a .json or .jsonl file of records")
    if HUB_ID.fullmatch(source) and path.suffix.lower() not in FILE_SUFFIXES:
        reject_pin(source, sha256)
        return RawSource(load_hub(source), source)
    raise SFTError(f"{source}: no such file; check the path (a JSON array or JSON Lines file of records)")


def source_layout(raw: RawSource, wanted: str) -> str:
    """`instruction` or `preference`: what the parsed source holds, checked against what the caller wants."""
    pairs = is_preference_layout(raw.records)
    if wanted == "instruction" and pairs:
        raise DataError(
            [
                f"{raw.name}: holds preference pairs (prompt, chosen, rejected), not instruction records; train on it "
                "with `stage: dpo`, or pass a file of instruction records (instruction, input, output)"
            ]
        )
    if wanted == "preference" and not pairs:
        records = raw.records if isinstance(raw.records, list) else []
        keys = {key for record in records if isinstance(record, dict) for key in record}
        if not keys & set(PREFERENCE_FIELDS) and keys & set(FIELDS):
            raise DataError(
                [
                    f"{raw.name}: holds instruction records (instruction, input, output), not preference pairs "
                    "(prompt, chosen, rejected); build pairs from it with `sft prefs build --model SFT_DIR "
                    f"--data {raw.name} --output pairs.json`"
                ]
            )
        return "preference"  # a list of something else: validation names what each pair lacks
    return "preference" if pairs else "instruction"


def reject_pin(source: str, sha256: str | None) -> None:
    if sha256:
        raise SFTError(f"{source}: a sha256 pin applies to files and URLs only; drop --sha256")


def synth_source(source: str) -> list[dict[str, str]]:
    from sft.data.synth import synth_records

    _, _, size = source.partition(":")
    if not size:
        return synth_records(SYNTH_DEFAULT_SIZE, SYNTH_SEED)
    if not size.isdigit() or int(size) < 1:
        raise SFTError(f"{source}: the size after '{SYNTH_NAME}:' must be a positive whole number")
    return synth_records(int(size), SYNTH_SEED)


# Files ---------------------------------------------------------------------------------------------


def save_records(path: str | os.PathLike, records: list[dict[str, Any]]) -> Path:
    """Write records atomically: JSON Lines for .jsonl, else a JSON array indented like the seed data;
    gzip-compressed where the name ends in .gz (`data.jsonl.gz`).

    Text is written as UTF-8 characters, not \\u escapes, so files stay readable in any script.
    """
    path = Path(path)
    compressed = path.suffix.lower() == ".gz"
    layout = Path(path.stem).suffix.lower() if compressed else path.suffix.lower()
    if layout in JSONL_SUFFIXES:
        text = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    else:
        text = json.dumps(records, indent=4, ensure_ascii=False) + "\n"
    data = text.encode("utf-8")
    # mtime=0: the same records always give the same bytes.
    return atomic_write_bytes(path, gzip.compress(data, mtime=0) if compressed else data)


def read_file(path: Path, name: str) -> RawSource:
    """A JSON array file or a JSON Lines file (by suffix, or because its objects sit one per line),
    gzip-compressed when its name ends in .gz."""
    data = path.read_bytes()
    suffix = path.suffix.lower()
    if suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as error:
            raise DataError(
                [f"{name}: not a readable gzip file ({error}); compress it again with gzip, or drop the .gz suffix"]
            ) from None
        suffix = Path(path.stem).suffix.lower()  # data.jsonl.gz holds JSON Lines
    try:
        text = data.decode("utf-8-sig")  # tolerate the byte-order mark some editors write
    except UnicodeDecodeError as error:
        raise DataError(
            [f"{name}: byte {error.start} (0x{data[error.start]:02x}) is not valid UTF-8; save the file as UTF-8"]
        ) from None
    return parse_text(text, name, jsonl=suffix in JSONL_SUFFIXES)


def parse_text(text: str, name: str, jsonl: bool = False) -> RawSource:
    stripped = text.strip()
    if not stripped:
        raise DataError([f"{name}: the file is empty; it should hold a JSON array of records or JSON Lines"])
    if jsonl:
        return parse_jsonl(text, name)
    if stripped.startswith("{"):
        try:
            value = json.loads(text, object_pairs_hook=json_object)
        except json.JSONDecodeError:
            return parse_jsonl(text, name)  # several objects: JSON Lines in a .json file
        except RecursionError:
            raise DataError([too_deep(name)]) from None
        if "\n" not in stripped:
            return RawSource([value], name, [1])  # a one-record JSON Lines file
        return RawSource(value, name)  # a single object: validation explains what is expected
    return parse_json(text, name)


def parse_json(text: str, name: str) -> RawSource:
    try:
        value = json.loads(text, object_pairs_hook=json_object)
    except json.JSONDecodeError as error:
        raise DataError(
            [f"{name}: line {error.lineno}, column {error.colno}: invalid JSON ({error.msg}); fix the syntax there"]
        ) from None
    except RecursionError:
        raise DataError([too_deep(name)]) from None
    return RawSource(value, name, RecordLines(text) if isinstance(value, list) else None)


def parse_jsonl(text: str, name: str) -> RawSource:
    """One JSON value per line; blank lines are skipped, and every malformed line is reported."""
    records, lines, problems = [], [], []
    # Split on "\n" only: str.splitlines would also split on U+2028 and friends, which JSON allows
    # unescaped inside strings.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line, object_pairs_hook=json_object))
            lines.append(number)
        except json.JSONDecodeError as error:
            problems.append(
                f"{name}: line {number}, column {error.colno}: invalid JSON ({error.msg}); "
                "each line must hold one complete JSON object"
            )
        except RecursionError:
            problems.append(too_deep(f"{name}: line {number}"))
    if problems:
        raise DataError(problems)
    return RawSource(records, name, lines)


def too_deep(where: str) -> str:
    # Past Python's recursion limit ("[[[[..." in a file) json raises RecursionError, not JSONDecodeError.
    return (
        f"{where}: the JSON is nested too deeply to read (arrays or objects inside each other, hundreds of levels "
        "deep); each record should be an object whose fields hold text"
    )


WHITESPACE = re.compile(r"[ \t\n\r]*")


def record_lines(text: str) -> list[int]:
    """The line on which each element of a (valid) JSON array starts, so messages can point at it."""
    decoder = json.JSONDecoder()
    index = WHITESPACE.match(text).end() + 1  # just past "["
    index = WHITESPACE.match(text, index).end()
    lines: list[int] = []
    line, counted = 1, 0
    while index < len(text) and text[index] != "]":
        line += text.count("\n", counted, index)
        counted = index
        lines.append(line)
        _, index = decoder.raw_decode(text, index)
        index = WHITESPACE.match(text, index).end()
        if index < len(text) and text[index] == ",":
            index = WHITESPACE.match(text, index + 1).end()
    return lines


# Formats -------------------------------------------------------------------------------------------


def resolve_mapping(format: str, field_map: dict[str, str] | None, raw: Any, name: str) -> dict[str, str]:
    """Target field -> source field, from the format name, an explicit mapping, or the data itself."""
    spec = (format or "auto").strip()
    if "=" in spec:
        mapping = {**ALPACA_MAP, **parse_field_map(spec)}
    elif spec.lower() in FORMATS:
        mapping = dict(FORMATS[spec.lower()])
    elif spec.lower() == "auto":
        mapping = dict(ALPACA_MAP) if field_map else detect_format(raw, name)
    else:
        raise SFTError(
            f"unknown format '{format}'; use auto, alpaca, dolly or a mapping like instruction=question,output=answer"
        )
    if field_map:
        mapping.update(check_targets(field_map))
    return mapping


def detect_format(raw: Any, name: str) -> dict[str, str]:
    """Alpaca or Dolly, from the field names the records use."""
    keys: set[str] = set()
    if isinstance(raw, list):
        keys = {key for record in raw if isinstance(record, dict) for key in record}
    if not keys or "output" in keys:
        return dict(ALPACA_MAP)  # nothing to go by: validation will say what is missing
    if {"response", "context"} & keys:
        return dict(FORMATS["dolly"])
    if "instruction" in keys:
        return dict(ALPACA_MAP)
    shown = ", ".join(sorted(keys)[:12])
    raise SFTError(
        f"{name}: cannot tell the format from the fields ({shown}); pass --format alpaca or dolly, "
        "or a mapping such as --format instruction=question,output=answer"
    )


def parse_field_map(text: str) -> dict[str, str]:
    """`instruction=question,output=answer` -> {"instruction": "question", "output": "answer"}."""
    mapping: dict[str, str] = {}
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        target, sep, field = (side.strip() for side in part.partition("="))
        if not sep or not target or not field:
            raise SFTError(f"field mapping '{part}' should look like TARGET=FIELD, e.g. output=answer")
        mapping[target] = field
    return check_targets(mapping)


def check_targets(mapping: dict[str, str]) -> dict[str, str]:
    wrong = [target for target in mapping if target not in FIELDS]
    if wrong:
        raise SFTError(
            f"field mapping targets must be instruction, input or output, not {', '.join(map(repr, wrong))}; "
            "write TARGET=FIELD_IN_YOUR_DATA, e.g. output=answer"
        )
    return dict(mapping)


# URLs ----------------------------------------------------------------------------------------------


def is_url(source: str) -> bool:
    return source.lower().startswith(URL_SCHEMES)


def display_source(source: str) -> str:
    """`source` as messages and logs may show it: for an http(s) URL, scheme, host and path only.

    Credentials (`user:password@`) and the query string (signatures, tokens: `?X-Amz-Signature=...`)
    are dropped, and `?…` / `#…` shows where a query or fragment was. Other sources come back unchanged.
    """
    if not is_url(source):
        return source
    parts = urllib.parse.urlsplit(source)
    shown = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
    return shown + ("?…" if parts.query else "") + ("#…" if parts.fragment else "")


def without_credentials(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def redact(text: str, url: str) -> str:
    """`text` (say a library's error message) with every secret part of `url` taken out."""
    parts = urllib.parse.urlsplit(url)
    text = text.replace(url, display_source(url))
    userinfo = parts.netloc.rpartition("@")[0]
    for secret in (userinfo + "@" if userinfo else "", parts.query, parts.fragment, parts.password or ""):
        if secret:
            text = text.replace(secret, "…")
    return text


def download(url: str, sha256: str | None = None) -> Path:
    """The cached copy of `url`, fetched on first use; a pinned hash must match before it is kept."""
    pin = normalise_sha256(sha256) if sha256 else None
    folder = cache_dir() / "downloads"
    folder.mkdir(parents=True, exist_ok=True)
    # The cache key leaves out `user:password@`, so not even a hash of a password lands on disk.
    key = without_credentials(url) if "@" in urllib.parse.urlsplit(url).netloc else url
    target = folder / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}-{url_filename(url)}"
    if target.is_file() and (pin is None or file_sha256(target) == pin):
        return target
    fetch(url, target, pin)
    return target


def url_filename(url: str) -> str:
    """The URL's last path segment made safe for a file name; the suffix tells JSON from JSONL.

    Only the path is used: the query string may hold signatures or tokens.
    """
    segment = urllib.parse.urlparse(url).path.rstrip("/").rsplit("/", 1)[-1]
    return re.sub(r"[^A-Za-z0-9._-]", "_", segment)[-80:] or "data.json"


def open_url(url: str) -> Any:
    """urlopen for `url`; credentials in it are sent as HTTP Basic auth, which urllib does not do by itself.

    The header is "unredirected": a redirect to another host must not carry the password along.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S)
    request = urllib.request.Request(without_credentials(url))
    user = urllib.parse.unquote(parts.username or "")
    password = urllib.parse.unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    request.add_unredirected_header("Authorization", f"Basic {token}")
    return urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S)


def fetch(url: str, target: Path, pin: str | None) -> None:
    """Stream `url` into a temporary file beside `target` and move it into place once verified."""
    shown = display_source(url)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, open_url(url) as response:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if pin is not None and digest.hexdigest() != pin:
            raise SFTError(
                f"{shown}: sha256 mismatch: expected {pin}, downloaded {digest.hexdigest()}; "
                "the file changed on the server or the pin is wrong"
            )
        os.replace(tmp, target)
    except urllib.error.HTTPError as error:
        raise SFTError(f"cannot download {shown}: HTTP {error.code} {redact(str(error.reason), url)}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", None) or error
        raise SFTError(f"cannot download {shown}: {redact(str(reason), url)}") from None
    except (http.client.HTTPException, ValueError) as error:  # a malformed URL or reply, e.g. a bad port
        detail = redact(str(error), url) or "no details"
        raise SFTError(f"cannot download {shown}: {type(error).__name__}: {detail}; check the URL") from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def normalise_sha256(value: str) -> str:
    pin = value.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", pin):
        raise SFTError(f"'{value}' is not a sha256 digest (64 hexadecimal digits)")
    return pin


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, pin: str, name: str) -> None:
    actual = file_sha256(path)
    if actual != pin:
        raise SFTError(f"{name}: sha256 mismatch: expected {pin}, found {actual}; the file is not the pinned one")


# Hub data sets -------------------------------------------------------------------------------------


def load_hub(source: str) -> list[Any]:
    """Rows of a Hub data set (`owner/name[:split]`, default split "train" or else the first)."""
    from sft.hub.access import hub_unreachable, offline_setting

    repo_id, _, split = source.partition(":")
    # Offline, a copy in the data sets cache may still load; online, an unreachable Hub fails at once.
    offline = offline_setting(datasets=True)
    problem = None if offline else hub_unreachable()
    if problem:
        raise SFTError(
            f"{source}: not a local file, and {problem} to load it as a data set; "
            "pass a JSON or JSONL file, a URL, or sft-synth"
        )
    from datasets import load_dataset

    try:
        data = load_dataset(repo_id, split=split or None)
    except Exception as error:  # datasets raises many types; every one means "cannot load"
        why = (
            f"the Hub is offline ({offline} is set) and no cached copy exists"
            if offline
            else (f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no details'}")
        )
        raise SFTError(
            f"{source}: not a local file, and cannot load it as a Hub data set: {why}; "
            "pass a JSON or JSONL file, a URL, or sft-synth"
        ) from None
    if not split:
        data = data["train"] if "train" in data else data[next(iter(data))]
    return data.to_list()

"""The distractor pools are well formed.

Checks every pool file (artist/character/object/nsfw) for:
  * UTF-8 decoding, no BOM, LF line endings, trailing newline
  * a leading block of '#' header lines with kind / template / source / count
  * kind matching the file name and the expected template for that kind
  * count header equal to the number of entries, and a minimum entry count
  * no empty lines, no leading/trailing whitespace, no tabs, no '|', no '#'
    at the start of an entry, no case-insensitive duplicates
  * (nsfw only) no entry containing a blocklisted word
and aliases.txt for:
  * '# alias groups:' and '# source:' header lines
  * every group has a canonical plus at least one alias, separated by ' | '
  * no name appears (case-insensitively) in two different groups; case-only
    variants inside one group are allowed
  * at least 60 groups
"""
import os
import re
import unicodedata

import pytest

from surgun_pack.surgun_core.distractors import POOL_DIR, load_pool

EXPECTED = {
    "artist": ("a painting in the style of {x}", 400),
    "character": ("an image of {x}", 400),
    "object": ("a photo of a {x}", 400),
    "nsfw": ("{x}", 300),
}
REQUIRED_KEYS = ("kind", "template", "source", "count")
MIN_ALIAS_GROUPS = 60

# Words that must never appear in the safe nsfw-replacement pool.
NSFW_BLOCK = re.compile(
    r"\b(nud\w*|naked|nsfw|bikini\w*|swimsuit\w*|swimwear|lingerie|underwear|"
    r"bra|panties|topless|shirtless|bare\w*|undress\w*|strip\w*|sex\w*|"
    r"sensual\w*|seduct\w*|erotic\w*|intimate\w*|provocative|revealing|"
    r"skin|body|bodies|breast|breasts|butt|butts|buttock\w*|thigh\w*|bath\w*|shower\w*|bed|"
    r"bedroom|sauna|spa|child\w*|kid\w*|girl\w*|boy\w*|teen\w*|baby|babies|"
    r"young|minor\w*|schoolgirl\w*|toddler\w*|infant\w*)\b",
    re.IGNORECASE,
)


def norm(s):
    """Key used for duplicate detection: NFC + casefold."""
    return unicodedata.normalize("NFC", s).casefold()


def read_text(path, errors):
    raw = open(path, "rb").read()
    name = os.path.basename(path)
    if raw.startswith(b"\xef\xbb\xbf"):
        errors.append(f"{name}: has a UTF-8 BOM")
        raw = raw[3:]
    if b"\r" in raw:
        errors.append(f"{name}: contains CR characters (use LF line endings)")
    if raw and not raw.endswith(b"\n"):
        errors.append(f"{name}: no trailing newline")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        errors.append(f"{name}: not valid UTF-8 ({e})")
        return raw.decode("utf-8", "replace")


def split_header(lines):
    i = 0
    while i < len(lines) and lines[i].startswith("#"):
        i += 1
    return lines[:i], lines[i:], i


def check_entry_text(name, lineno, s, errors):
    if s == "":
        errors.append(f"{name}:{lineno}: empty line in body")
        return False
    if s != s.strip():
        errors.append(f"{name}:{lineno}: leading/trailing whitespace: {s!r}")
    if "\t" in s:
        errors.append(f"{name}:{lineno}: tab character: {s!r}")
    if "  " in s:
        errors.append(f"{name}:{lineno}: double space: {s!r}")
    if s.startswith("#"):
        errors.append(f"{name}:{lineno}: entry starts with '#': {s!r}")
    if any(unicodedata.category(c) == "Cc" for c in s):
        errors.append(f"{name}:{lineno}: control character: {s!r}")
    return True


def check_pool(path, kind, errors, warnings):
    name = os.path.basename(path)
    text = read_text(path, errors)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines = lines[:-1]
    header, body, nhead = split_header(lines)
    meta = {}
    for h in header:
        m = re.match(r"^# ([a-z_ ]+): (.*)$", h)
        if m:
            key = m.group(1).strip()
            if key in meta:
                errors.append(f"{name}: duplicate header key {key!r}")
            meta[key] = m.group(2)
    for k in REQUIRED_KEYS:
        if k not in meta:
            errors.append(f"{name}: missing header '# {k}: ...'")
    tmpl, minimum = EXPECTED[kind]
    if meta.get("kind") != kind:
        errors.append(f"{name}: kind header {meta.get('kind')!r} != {kind!r}")
    if meta.get("template") != tmpl:
        errors.append(f"{name}: template header {meta.get('template')!r} != {tmpl!r}")
    if "{x}" not in meta.get("template", ""):
        errors.append(f"{name}: template lacks '{{x}}'")
    if not meta.get("source", "").strip():
        errors.append(f"{name}: empty source header")

    seen = {}
    entries = []
    for j, s in enumerate(body):
        lineno = nhead + j + 1
        if not check_entry_text(name, lineno, s, errors):
            continue
        if "|" in s:
            errors.append(f"{name}:{lineno}: '|' in entry: {s!r}")
        if "{" in s or "}" in s:
            errors.append(f"{name}:{lineno}: brace in entry: {s!r}")
        key = norm(s)
        if key in seen:
            errors.append(f"{name}:{lineno}: duplicate of line {seen[key]}: {s!r}")
        else:
            seen[key] = lineno
        if kind == "nsfw":
            m = NSFW_BLOCK.search(s)
            if m:
                errors.append(f"{name}:{lineno}: blocklisted word {m.group(0)!r}: {s!r}")
        entries.append(s)

    try:
        declared = int(meta.get("count", "-1"))
    except ValueError:
        declared = -1
        errors.append(f"{name}: count header is not an integer")
    if declared != len(entries):
        errors.append(f"{name}: count header {declared} != {len(entries)} entries")
    if len(entries) < minimum:
        errors.append(f"{name}: only {len(entries)} entries, need >= {minimum}")
    return entries


def check_aliases(path, pools, errors, warnings):
    name = os.path.basename(path)
    text = read_text(path, errors)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines = lines[:-1]
    header, body, nhead = split_header(lines)
    if not any(h.startswith("# alias groups: canonical | alias") for h in header):
        errors.append(f"{name}: missing '# alias groups: canonical | alias | alias ...' header")
    if not any(h.startswith("# source: ") and h[10:].strip() for h in header):
        errors.append(f"{name}: missing '# source: ...' header")

    pool_index = {}
    for kind, entries in pools.items():
        for e in entries:
            pool_index.setdefault(norm(e), []).append(kind)

    owner = {}
    groups = []
    in_pool = 0
    for j, s in enumerate(body):
        lineno = nhead + j + 1
        if not check_entry_text(name, lineno, s, errors):
            continue
        names = s.split(" | ")
        if len(names) < 2:
            errors.append(f"{name}:{lineno}: group needs a canonical and >= 1 alias: {s!r}")
        for n in names:
            if n == "" or n != n.strip() or "|" in n:
                errors.append(f"{name}:{lineno}: malformed name {n!r} (separator must be ' | ')")
                continue
            key = norm(n)
            if key in owner and owner[key] == lineno:
                # Case-only variants inside one group are tolerated (they are
                # redundant for a case-insensitive matcher, harmless otherwise).
                continue
            if key in owner:
                errors.append(f"{name}:{lineno}: {n!r} already in group at line {owner[key]}")
            else:
                owner[key] = lineno
        canon = names[0]
        if norm(canon) in pool_index:
            in_pool += 1
        for a in names[1:]:
            if norm(a) == norm(canon):
                continue
            if norm(a) in pool_index:
                warnings.append(
                    f"{name}:{lineno}: alias {a!r} of {canon!r} is itself a pool entry "
                    f"({', '.join(pool_index[norm(a)])}); concept may be duplicated")
        groups.append(names)
    if len(groups) < MIN_ALIAS_GROUPS:
        errors.append(f"{name}: only {len(groups)} groups, need >= {MIN_ALIAS_GROUPS}")
    return groups, in_pool


def _pools():
    errors, warnings = [], []
    pools = {kind: check_pool(str(POOL_DIR / f"{kind}.txt"), kind, errors, warnings) for kind in EXPECTED}
    return pools, errors


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_pool_file_is_well_formed(kind):
    errors, warnings = [], []
    entries = check_pool(str(POOL_DIR / f"{kind}.txt"), kind, errors, warnings)
    assert errors == []
    assert len(entries) >= EXPECTED[kind][1]
    assert load_pool(kind).entries == tuple(entries)  # the pack reads the same entries


def test_aliases_are_well_formed():
    pools, _ = _pools()
    errors, warnings = [], []
    groups, in_pool = check_aliases(str(POOL_DIR / "aliases.txt"), pools, errors, warnings)
    assert errors == []
    assert len(groups) >= MIN_ALIAS_GROUPS and in_pool > 0


def test_the_checker_catches_a_bad_pool(tmp_path):
    bad = tmp_path / "nsfw.txt"
    bad.write_text("# kind: nsfw\n# template: {x}\n# source: test\n# count: 3\nA Beach\na beach\na nude figure \n")
    errors = []
    check_pool(str(bad), "nsfw", errors, [])
    text = "\n".join(errors)
    assert "duplicate of line 5" in text and "blocklisted word 'nude'" in text and "leading/trailing whitespace" in text
    assert "only 3 entries" in text

#!/usr/bin/env python3
"""Lists the tests a ctest run skipped, with the reason each gave, and (with --strict) fails when
one of them is not on the allowlist (tests/skips-allowed.txt), so that a feature whose test skips
cannot pass CI unseen. ctest counts a skipped test as passed; this is the only place that looks.

Usage: scripts/skipped_tests.py [--strict] JUNIT_XML ALLOWLIST
  JUNIT_XML  what `ctest --output-junit FILE` wrote (a skipped test has status="notrun")
  ALLOWLIST  lines of `NAME_REGEX | REASON_REGEX | why`: a skip is allowed only when both the
             test's name and the reason it printed match (an IPv6 test may skip for want of [::1],
             not for any other reason)
Exit status: 0, or 1 with --strict when a skip is not allowed, 2 when the input is unreadable.
"""
import re
import sys
import xml.etree.ElementTree as ElementTree


def skip_reason(output):
    """The message a test gave for skipping: GoogleTest's lines after "Skipped", otherwise the
    last line it printed (a script that exits with the skip code says why last)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if line.endswith(": Skipped"):
            reason = []
            for following in lines[i + 1:]:
                if following.startswith("[  SKIPPED ]"):
                    break
                reason.append(following)
            return " ".join(reason) or "(no reason given)"
    return lines[-1] if lines else "(no output)"


def read_allowlist(path):
    rules = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = [part.strip() for part in line.split("|")]
            if len(parts) != 3 or not all(parts):
                raise ValueError(f"{path}:{number}: expected NAME_REGEX | REASON_REGEX | why")
            rules.append((re.compile(parts[0]), re.compile(parts[1]), parts[2]))
    return rules


def main(argv):
    strict = "--strict" in argv
    args = [arg for arg in argv if arg != "--strict"]
    if len(args) != 2:
        print(__doc__.strip().splitlines()[3], file=sys.stderr)
        return 2
    try:
        suite = ElementTree.parse(args[0]).getroot()
        rules = read_allowlist(args[1])
    except (OSError, ElementTree.ParseError, ValueError, re.error) as error:
        print(f"skipped_tests.py: {error}", file=sys.stderr)
        return 2

    skipped = []
    for case in suite.iter("testcase"):
        if case.get("status") != "notrun":
            continue
        name = case.get("name", "?")
        reason = skip_reason(case.findtext("system-out") or "")
        allowed = next((why for name_re, reason_re, why in rules
                        if name_re.fullmatch(name) and reason_re.search(reason)), None)
        skipped.append((name, reason, allowed))

    print(f"{len(skipped)} tests skipped")
    for name, reason, allowed in skipped:
        verdict = f"allowed: {allowed}" if allowed else "NOT ALLOWED"
        print(f"  {name}: {reason} [{verdict}]")
    refused = [name for name, _, allowed in skipped if not allowed]
    if strict and refused:
        print(f"skipped_tests.py: {len(refused)} tests skipped in CI without being on {args[1]}; "
              "a skip is not a pass (install what they need, or allow them there with the reason)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/env python3
"""Every alert in a rules file has a runbook_url that leads to a section of the README.

runbook_url must be README.md#<anchor>, and <anchor> a heading of the README as GitHub makes
its anchors (lower case, punctuation other than - and _ dropped, spaces to -). One line per
finding; exit 1.

Usage: check_runbooks.py RULES.yaml README.md
"""

import re
import sys

import yaml


def anchors(readme):
    headings = re.findall(r"^#+ (.+)$", open(readme).read(), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def main(rules, readme):
    known = anchors(readme)
    alerts = [r for g in yaml.safe_load(open(rules))["groups"] for r in g["rules"] if "alert" in r]
    bad = []
    for r in alerts:
        url = (r.get("annotations") or {}).get("runbook_url", "")
        if not url.startswith("README.md#") or url.split("#", 1)[1] not in known:
            bad.append(f"{r['alert']}: runbook_url {url!r} names no section of {readme}")
    return alerts, bad


if __name__ == "__main__":
    alerts, bad = main(sys.argv[1], sys.argv[2])
    for b in bad:
        print(b)
    if bad:
        sys.exit(1)
    print(f"{len(alerts)} alerts, each with a runbook section in {sys.argv[2]}")

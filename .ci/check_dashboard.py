#!/usr/bin/env python3
"""Structural check of a Grafana dashboard JSON (deploy/monitoring/grafana-dashboard.json).

Fails (exit 1, one line per finding) unless:
- the file is valid JSON with a title, uid and schemaVersion >= 36;
- the data source is the template variable DS_PROMETHEUS (type datasource, prometheus),
  and every panel and every target uses it, so the dashboard imports into any Grafana;
- every panel (rows' nested panels included) has a unique id, a title, a gridPos inside
  the 24-column grid that overlaps no other panel, and at least one target;
- every target has a refId (unique in its panel) and a non-empty expr, uses only
  variables the dashboard defines (or Grafana's built-ins), and is valid PromQL:
  with the variables replaced by sample values, every expr is handed to
  `promtool check rules` as a recording rule (skipped with a note if promtool is
  not installed).

With --prometheus URL, every query is also run against that Prometheus (template
variables set to ".*"); an empty result is fine, an error is not.

Usage: check_dashboard.py DASHBOARD.json [--prometheus URL]
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request

DS_VAR = "DS_PROMETHEUS"
DS_UID = "${" + DS_VAR + "}"
BUILTIN_VARS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h", "__range_s": "3600"}
VAR_RE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


def panels_of(items):
    for p in items:
        yield p
        yield from panels_of(p.get("panels") or [])


def run_queries(prometheus, exprs):
    """Runs each expr against a live Prometheus; returns the failures."""
    failures = []
    for _, ref, where, expr in exprs:
        url = prometheus.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.load(r)
        except urllib.error.HTTPError as e:
            body = json.load(e)
        if body.get("status") != "success":
            failures.append(f"{where} target {ref}: {body.get('error')}: {expr}")
    return failures


def main(path, prometheus=None):
    errors = []
    try:
        with open(path, encoding="utf-8") as f:
            dash = json.load(f)
    except (OSError, ValueError) as e:
        print(f"{path}: not valid JSON: {e}")
        return 1

    for key in ("title", "uid"):
        if not isinstance(dash.get(key), str) or not dash[key]:
            errors.append(f"dashboard has no {key}")
    if not isinstance(dash.get("schemaVersion"), int) or dash["schemaVersion"] < 36:
        errors.append(f"schemaVersion {dash.get('schemaVersion')!r}: want an integer >= 36")

    variables = {v.get("name"): v for v in (dash.get("templating") or {}).get("list", [])}
    ds = variables.get(DS_VAR)
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        errors.append(f"templating needs a variable {DS_VAR} of type datasource with query prometheus")
    for name, v in variables.items():
        if v.get("type") == "query" and (v.get("datasource") or {}).get("uid") != DS_UID:
            errors.append(f"variable {name}: datasource must be {DS_UID}")

    top = dash.get("panels")
    if not isinstance(top, list) or not top:
        errors.append("dashboard has no panels")
        top = []

    ids = {}
    boxes = []
    exprs = []
    for p in panels_of(top):
        pid = p.get("id")
        where = f"panel {pid} ({p.get('title')!r})"
        if not isinstance(pid, int):
            errors.append(f"{where}: id must be an integer")
        elif pid in ids:
            errors.append(f"{where}: id also used by {ids[pid]!r}")
        else:
            ids[pid] = p.get("title")
        if not p.get("title"):
            errors.append(f"{where}: no title")
        g = p.get("gridPos") or {}
        if not all(isinstance(g.get(k), int) for k in ("x", "y", "w", "h")):
            errors.append(f"{where}: gridPos needs integer x, y, w, h")
        elif g["x"] < 0 or g["w"] < 1 or g["h"] < 1 or g["x"] + g["w"] > 24:
            errors.append(f"{where}: gridPos {g} is outside the 24-column grid")
        else:
            for other, og in boxes:
                if (g["x"] < og["x"] + og["w"] and og["x"] < g["x"] + g["w"]
                        and g["y"] < og["y"] + og["h"] and og["y"] < g["y"] + g["h"]):
                    errors.append(f"{where}: overlaps {other}")
            boxes.append((where, g))
        if p.get("type") == "row":
            continue

        if (p.get("datasource") or {}).get("uid") != DS_UID:
            errors.append(f"{where}: datasource must be {{\"uid\": \"{DS_UID}\"}}, got {p.get('datasource')!r}")
        targets = p.get("targets")
        if not isinstance(targets, list) or not targets:
            errors.append(f"{where}: no targets")
            continue
        refs = set()
        for t in targets:
            ref = t.get("refId")
            if not ref or ref in refs:
                errors.append(f"{where}: target refId {ref!r} missing or repeated")
            refs.add(ref)
            if (t.get("datasource") or {}).get("uid") != DS_UID:
                errors.append(f"{where} target {ref}: datasource must be {DS_UID}")
            expr = t.get("expr")
            if not isinstance(expr, str) or not expr.strip():
                errors.append(f"{where} target {ref}: no expr")
                continue
            for m in VAR_RE.finditer(expr):
                name = m.group(1) or m.group(2) or m.group(3)
                if name not in variables and name not in BUILTIN_VARS:
                    errors.append(f"{where} target {ref}: unknown variable ${name}")
            exprs.append((pid, ref, where, expr))

    def sample(m):
        name = m.group(1) or m.group(2) or m.group(3)
        return BUILTIN_VARS.get(name, ".*")

    promtool = shutil.which("promtool")
    if exprs and promtool and not errors:

        with tempfile.TemporaryDirectory() as tmp:
            rules = os.path.join(tmp, "dashboard-exprs.yaml")
            with open(rules, "w", encoding="utf-8") as f:
                f.write("groups:\n  - name: dashboard\n    rules:\n")
                for pid, ref, _, expr in exprs:
                    f.write(f"      - record: dashboard:panel_{pid}_{ref}\n")
                    f.write(f"        expr: {json.dumps(VAR_RE.sub(sample, expr))}\n")
            r = subprocess.run([promtool, "check", "rules", rules], capture_output=True, text=True)
            if r.returncode != 0:
                errors.append("promtool rejects a panel query:\n" + r.stdout + r.stderr)
    elif exprs and not promtool:
        print("note: promtool not installed, PromQL syntax not checked")

    if prometheus and not errors:
        live = [(pid, ref, where, VAR_RE.sub(sample, expr)) for pid, ref, where, expr in exprs]
        errors.extend(f"query failed on {prometheus}: {f}" for f in run_queries(prometheus, live))

    for e in errors:
        print(f"{path}: {e}")
    if errors:
        return 1
    n_panels = sum(1 for p in panels_of(top) if p.get("type") != "row")
    ran = f", all run on {prometheus} without error" if prometheus else ""
    print(f"{path}: ok ({n_panels} panels, {len(exprs)} queries{ran}, schemaVersion {dash['schemaVersion']})")
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    prom = None
    if len(args) == 3 and args[1] == "--prometheus":
        prom = args[2]
        args = args[:1]
    if len(args) != 1:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        sys.exit(2)
    sys.exit(main(args[0], prom))

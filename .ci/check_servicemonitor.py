#!/usr/bin/env python3
"""The ServiceMonitor in deploy/monitoring scrapes what deploy/kubernetes deploys.

A CRD has no schema in kubernetes-validate's offline set, so this checks what a typo would
break: the kind and apiVersion, that its selector matches the labels of exactly one Service in
deploy/kubernetes, that each endpoint names a port of that Service which targets keygate's
admin port in the Deployment, and that the path is /metrics. One line per finding; exit 1.

Usage: check_servicemonitor.py SERVICEMONITOR.yaml DEPLOY_DIR
"""

import glob
import sys

import yaml


def docs(pattern):
    for path in sorted(glob.glob(pattern)):
        for d in yaml.safe_load_all(open(path)):
            if d:
                yield d


def main(monitor_path, deploy_dir):
    problems = []
    monitor = yaml.safe_load(open(monitor_path))
    if (monitor.get("apiVersion"), monitor.get("kind")) != ("monitoring.coreos.com/v1", "ServiceMonitor"):
        problems.append(f"{monitor_path}: not a monitoring.coreos.com/v1 ServiceMonitor")
    spec = monitor.get("spec") or {}
    want = (spec.get("selector") or {}).get("matchLabels") or {}
    objects = list(docs(f"{deploy_dir}/*.yaml"))
    services = [
        o for o in objects
        if o.get("kind") == "Service" and want and all(o["metadata"].get("labels", {}).get(k) == v for k, v in want.items())
    ]
    if len(services) != 1:
        names = [s["metadata"]["name"] for s in services]
        problems.append(f"{monitor_path}: selector {want} matches {len(services)} Services in {deploy_dir} {names}, not one")
        return problems
    service = services[0]
    admin_ports = set()
    for o in objects:
        if o.get("kind") != "Deployment":
            continue
        pod = o["spec"]["template"]["spec"]
        for c in pod.get("initContainers", []) + pod.get("containers", []):
            if c.get("name") == "keygate":
                admin_ports |= {p["name"] for p in c.get("ports", []) if p.get("containerPort") == 9090}
                admin_ports |= {9090}
    ports = {p.get("name"): p for p in service["spec"].get("ports", [])}
    endpoints = spec.get("endpoints") or []
    if not endpoints:
        problems.append(f"{monitor_path}: no endpoints")
    for e in endpoints:
        port = ports.get(e.get("port"))
        if port is None:
            problems.append(f"{monitor_path}: endpoint port {e.get('port')!r} is not a port of Service "
                            f"{service['metadata']['name']} ({sorted(ports)})")
        elif port.get("targetPort") not in admin_ports:
            problems.append(f"{monitor_path}: Service port {e.get('port')} targets {port.get('targetPort')!r}, "
                            f"not keygate's admin port ({sorted(map(str, admin_ports))})")
        if e.get("path", "/metrics") != "/metrics":
            problems.append(f"{monitor_path}: endpoint path {e.get('path')!r} is not /metrics")
    return problems


if __name__ == "__main__":
    found = main(sys.argv[1], sys.argv[2])
    for p in found:
        print(p)
    if found:
        sys.exit(1)
    print(f"{sys.argv[1]}: ok (selects one Service in {sys.argv[2]}, on keygate's admin port)")

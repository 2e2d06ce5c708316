#!/usr/bin/env python3
"""Refit one detector constant inside the leave-one-family-out protocol.

Usage: scripts/refit_constant.py NAME VALUE=REPORT.json [VALUE=REPORT.json ...]

Each REPORT is `guard-eval --families --json` from a build with NAME set to VALUE (same seed).
For each held-out family k, the value is chosen on the other families only, by the rule
`lofo.rs` uses for the flag threshold: the highest share of harvesting accounts flagged among
the values that flag no heavy customer and at most 2 % of the benign accounts; ties go to the
value listed first (list the shipped value first). Figures are then read from family k of the
chosen value's report, so every family is reported once, by a value fitted without it.
Requires every fold of every report to have fitted the same flag threshold (flags per account
are then valid for the training families too).
"""
import json
import sys

TRAIN_MAX_FPR = 0.02
FAMILIES = 4


def training(report, k):
    accounts = [a for a in report["accounts_detail"] if a["family"] != k]
    benign = [a for a in accounts if not a["harvesting"]]
    harvest = [a for a in accounts if a["harvesting"]]
    fpr = sum(a["flagged"] for a in benign) / max(len(benign), 1)
    heavy = sum(a["flagged"] and a["heavy"] for a in benign)
    recall = sum(a["flagged"] for a in harvest) / max(len(harvest), 1)
    return fpr, heavy, recall


def main():
    name = sys.argv[1]
    candidates = []
    for arg in sys.argv[2:]:
        value, path = arg.split("=", 1)
        with open(path) as f:
            report = json.load(f)
        thresholds = {f["threshold"] for f in report["folds"]}
        if len(thresholds) != 1:
            sys.exit(f"{path}: folds fitted different flag thresholds {thresholds}")
        candidates.append((value, report))
    held = []
    for k in range(FAMILIES):
        best = None
        for value, report in candidates:
            fpr, heavy, recall = training(report, k)
            print(f"fold {k} {name}={value}: training benign FPR {fpr:.1%}, "
                  f"heavy flagged {heavy}, harvesting flagged {recall:.1%}")
            if heavy or fpr > TRAIN_MAX_FPR:
                continue
            if best is None or recall > best[1]:
                best = (value, recall, report)
        if best is None:
            sys.exit(f"fold {k}: no value meets the training constraints")
        print(f"fold {k}: {name} = {best[0]}")
        held.extend(a for a in best[2]["accounts_detail"] if a["family"] == k)
    benign = [a for a in held if not a["harvesting"]]
    print(f"held out: benign flagged {sum(a['flagged'] for a in benign)} of {len(benign)}, "
          f"heavy flagged {sum(a['flagged'] and a['heavy'] for a in benign)}")
    for kind in sorted({a["kind"] for a in held if a["harvesting"]}):
        accounts = [a for a in held if a["kind"] == kind]
        flagged = sorted(a["requests_until_flagged"] for a in accounts if a["flagged"])
        median = flagged[len(flagged) // 2] if flagged else "-"
        line = (f"  {kind}: flagged {sum(a['flagged'] for a in accounts)} of {len(accounts)}, "
                f"median requests to flag {median}")
        if kind == "hydra_campaign":
            # Flagged and in the campaign's largest cluster, per family (as lofo.rs counts it).
            clustered = 0
            for k in range(FAMILIES):
                sizes = {}
                for a in accounts:
                    if a["family"] == k and a["flagged"] and a["cluster"]:
                        sizes[a["cluster"]] = sizes.get(a["cluster"], 0) + 1
                clustered += max(sizes.values(), default=0)
            line += f", flagged and in their campaign's cluster {clustered} of {len(accounts)}"
        print(line)


if __name__ == "__main__":
    main()

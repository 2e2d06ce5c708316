#!/usr/bin/env python3
"""Score `tollgate guard replay --json` against the labels written by scripts/blind_traffic.py.

    python3 scripts/blind_score.py --dir /tmp/blind1 --bin /work/bins/tollgate-base   # runs the replay
    python3 scripts/blind_score.py --dir /tmp/blind1 --replay /tmp/blind1/replay.json # reads a saved one

Prints a Markdown table per kind and the issue #16 "Done when" criteria. `--explain` adds, for every
missed harvester and every flagged benign account, the replay's own signal explanations (largest
contributions first). Standard library only.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
from collections import Counter, defaultdict

INF = float("inf")


def contribution(sig):
    m = re.search(r"\(([+-]\d+(?:\.\d+)?) to the log-odds\)", sig.get("explanation", ""))
    return float(m.group(1)) if m else 0.0


def med(xs):
    if not xs:
        return None
    m = statistics.median(xs)
    return m


def fmt_med(m):
    if m is None:
        return "-"
    if m == INF:
        return "not reached"
    return f"{m:g}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True, help="directory with traffic.jsonl and labels.json")
    ap.add_argument("--replay", help="saved `guard replay --json` output (otherwise run --bin)")
    ap.add_argument("--bin", help="tollgate binary to run `guard replay --input DIR/traffic.jsonl --json` with")
    ap.add_argument("--explain", action="store_true", help="print the replay's explanations for every miss")
    args = ap.parse_args()

    labels = json.load(open(os.path.join(args.dir, "labels.json")))
    orgs = labels["organizations"]
    if args.replay:
        report = json.load(open(args.replay))
    else:
        if not args.bin:
            ap.error("give --replay or --bin")
        out = subprocess.run([args.bin, "guard", "replay", "--input", os.path.join(args.dir, "traffic.jsonl"), "--json"],
                             check=True, capture_output=True, text=True).stdout
        with open(os.path.join(args.dir, "replay.json"), "w") as f:
            f.write(out)
        report = json.loads(out)
    rep = {o["organization"]: o for o in report["organizations"]}
    missing = [o for o in orgs if o not in rep]
    if missing:
        print(f"warning: {len(missing)} labelled organizations absent from the replay: {missing[:5]}")

    def flagged(o):
        return bool(rep.get(o, {}).get("flagged"))

    def rtf(o):
        r = rep.get(o, {})
        return r["requests_until_flagged"] if r.get("flagged") and r.get("requests_until_flagged") is not None else INF

    by_kind = defaultdict(list)
    for o, lab in orgs.items():
        by_kind[(lab["harvesting"], lab["kind"])].append(o)

    print(f"seed {labels['seed']}: {sum(l['requests'] for l in orgs.values())} requests, {len(orgs)} organizations\n")
    print("| kind | harvesting | accounts | requests (median/acct) | flagged | requests to flag (median of flagged) |")
    print("|---|---|---:|---:|---:|---:|")
    for (harv, kind), os_ in sorted(by_kind.items()):
        fl = [o for o in os_ if flagged(o)]
        reqs = med([orgs[o]["requests"] for o in os_])
        print(f"| {kind} | {'yes' if harv else 'no'} | {len(os_)} | {reqs:g} | {len(fl)} | {fmt_med(med([rtf(o) for o in fl]))} |")

    benign = [o for o, l in orgs.items() if not l["harvesting"]]
    heavy = [o for o, l in orgs.items() if l["heavy"]]
    b_fl = [o for o in benign if flagged(o)]
    h_fl = [o for o in heavy if flagged(o)]
    fpr = len(b_fl) / len(benign)

    # segment harvest by attacker share
    seg = [o for o, l in orgs.items() if l["kind"] == "segment_harvest"]
    seg_rows = sorted((orgs[o]["note"], o, flagged(o)) for o in seg)

    # harvesting kinds: hydra counts as one kind
    kinds = sorted({l["kind"] for l in orgs.values() if l["harvesting"]})
    caught = {}
    hydra_info = None
    for kind in kinds:
        members = [o for o, l in orgs.items() if l["kind"] == kind]
        share = sum(flagged(o) for o in members) / len(members)
        if kind == "hydra":
            clusters = Counter(rep.get(o, {}).get("cluster") for o in members if rep.get(o, {}).get("cluster"))
            top, top_n = (clusters.most_common(1)[0] if clusters else (None, 0))
            both = sum(1 for o in members if flagged(o) and rep.get(o, {}).get("cluster") == top and top)
            foreign = [o for o, r in rep.items() if top and r.get("cluster") == top and orgs.get(o, {}).get("kind") != "hydra"]
            hydra_info = (len(members), share, top_n / len(members), both / len(members), len(clusters), foreign)
            caught[kind] = share >= 0.8 and both / len(members) >= 0.8
        else:
            caught[kind] = share >= 0.8

    blatant = [o for o, l in orgs.items() if l["blatant"]]
    blatant_med = med([rtf(o) for o in blatant])

    # clusters that contain benign accounts (false merges)
    cl_members = defaultdict(list)
    for o, r in rep.items():
        if r.get("cluster"):
            cl_members[r["cluster"]].append(o)
    benign_clusters = {c: m for c, m in cl_members.items() if any(not orgs.get(o, {}).get("harvesting", True) for o in m)}

    def desc(os_):
        return ", ".join("%s (%s/%s)" % (o, orgs[o]["kind"], orgs[o]["note"] or "-") for o in os_)

    print()
    print(f"- benign accounts flagged: {len(b_fl)} of {len(benign)} ({fpr:.1%})" + (": " + desc(b_fl) if b_fl else ""))
    print(f"- heavy customers flagged: {len(h_fl)} of {len(heavy)}" + (": " + desc(h_fl) if h_fl else ""))
    print(f"- harvesting kinds caught (>= 80% of accounts; hydra also linked): {sum(caught.values())} of {len(kinds)}: "
          + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in caught.items()))
    if hydra_info:
        n, share, linked, both, ncl, foreign = hydra_info
        print(f"- hydra ({n} accounts): {share:.0%} flagged, {linked:.0%} in its largest cluster, {both:.0%} flagged and in that cluster"
              f" ({ncl} distinct clusters among members; {len(foreign)} non-members in the largest)")
    print("- segment harvest by share: " + ", ".join(f"{note} {'flagged' if f else 'missed'}" for note, _, f in seg_rows))
    print(f"- blatant harvesters ({len(blatant)}): median requests to flag {fmt_med(blatant_med)}"
          f" (unflagged count as never); flagged {sum(flagged(o) for o in blatant)} of {len(blatant)}")
    print(f"- clusters holding benign accounts: {len(benign_clusters)}"
          + (": " + "; ".join(f"{c}: {', '.join(orgs.get(o, {}).get('kind', '?') for o in m)} (flagged {sum(flagged(o) for o in m)})" for c, m in sorted(benign_clusters.items())) if benign_clusters else ""))

    crit = [
        ("no heavy customer flagged", len(h_fl) == 0),
        ("<= 1 in 20 benign flagged", fpr <= 0.05),
        (">= 5 of 6 harvesting kinds caught", sum(caught.values()) >= 5),
        (">= 80% of hydra flagged and in one cluster", bool(hydra_info and hydra_info[3] >= 0.8)),
        ("median <= 500 requests to flag a blatant harvester", blatant_med is not None and blatant_med <= 500),
    ]
    print("\nCriteria: " + "; ".join(f"{name}: {'holds' if ok else 'FAILS'}" for name, ok in crit))

    if args.explain:
        print("\n## Explanations (replay output), misses and false positives")
        for o, lab in sorted(orgs.items(), key=lambda x: (x[1]["kind"], x[0])):
            miss = lab["harvesting"] and not flagged(o)
            fp = not lab["harvesting"] and flagged(o)
            if not (miss or fp):
                continue
            r = rep.get(o, {})
            sigs = sorted(r.get("signals", []), key=lambda s: -abs(contribution(s)))
            print(f"\n{'MISS' if miss else 'FALSE POSITIVE'} {o} ({lab['kind']}, {lab['note'] or '-'}, {lab['requests']} requests): "
                  f"score {r.get('score')}, cluster {r.get('cluster')}, first flagged {r.get('first_flagged_at')}")
            for s in sigs[:6]:
                print(f"  - {s['name']}: {s['explanation']}")
            if r.get("segment"):
                print(f"  judged on segment {r['segment']}:")
                seg = sorted(r.get("segment_signals", []), key=lambda s: -abs(contribution(s)))
                for s in seg[:6]:
                    print(f"    - {s['name']}: {s['explanation']}")


if __name__ == "__main__":
    main()

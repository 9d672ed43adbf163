"""Per-frame verdicts for a run that has none: vipd-dpdk-pcap (the real engine over DPDK net_pcap).

With one lcore and one port the engine keeps input order, so the k-th output frame belongs to the
k-th input frame that expect.json says is forwarded. Kernel and drop verdicts are taken from
expect.json, and their totals (per drop reason, kernel, sent) must equal the engine's own counters
in its summary; check.py then checks every output frame against its input as usual.

usage: synth_verdicts.py WORK_DIR SUMMARY.json   (writes WORK_DIR/verdicts.jsonl; exit 1 on mismatch)
"""
import collections
import json
import sys


def main():
    work, summary_path = sys.argv[1], sys.argv[2]
    with open(summary_path) as f:
        summary = json.load(f)
    with open(work + "/expect.json") as f:
        expect = json.load(f)
    verdicts, sent, kernel, drops = [], 0, 0, collections.Counter()
    for e in expect:
        v = {"index": e["index"], "verdict": e["verdict"]}
        if e["verdict"] == "forward":
            v.update(port=0, output_index=sent)
            sent += 1
        elif e["verdict"] == "drop":
            v["reason"] = e["reason"]
            drops[e["reason"]] += 1
        else:
            kernel += 1
        verdicts.append(v)
    problems = []
    if dict(drops) != summary.get("drops"):
        problems.append(f"drops by reason: expected {dict(drops)}, engine counted {summary.get('drops')}")
    if kernel != summary.get("to_kernel"):
        problems.append(f"to kernel: expected {kernel}, engine counted {summary.get('to_kernel')}")
    if sent != summary.get("tx_packets"):
        problems.append(f"sent: expected {sent}, engine sent {summary.get('tx_packets')}")
    with open(work + "/verdicts.jsonl", "w") as f:
        f.writelines(json.dumps(v) + "\n" for v in verdicts)
    for p in problems:
        print("FAIL engine totals: " + p)
    print(f"synth_verdicts: {sent} forwarded, {kernel} to kernel, {sum(drops.values())} dropped; "
          f"engine totals {'match' if not problems else 'DIFFER'}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()

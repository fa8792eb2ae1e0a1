#!/usr/bin/env python3
"""What a Prometheus scrape costs: point_select qps through credproxy with and without a scraper.

    bench/scrape_cost.py [--rounds N] [--duration S] [--threads T] [--interval S]

Uses bench/driver.py's set-up (a MariaDB of its own, sysbench tables, a Release credproxy from
build-release/: run bench/run.sh --quick once, or build it there) and one credproxy with
admin_listen. Runs alternate, in the same process and server: point_select with nothing
scraping, then with a scraper GETting /metrics every --interval seconds (1 s: fifteen times
Prometheus' default rate), interleaved for --rounds rounds; prints the median of each and the
ratio, and what one scrape costs on the main thread (wall time per GET, bytes).
"""

import argparse
import statistics
import sys
import threading
import time
import types
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import driver  # noqa: E402


class Scraper(threading.Thread):
    """GETs url every interval seconds until stopped; records each request's wall time."""

    def __init__(self, url, interval):
        super().__init__(daemon=True)
        self.url, self.interval = url, interval
        self.stop_ev = threading.Event()
        self.times, self.sizes, self.errors = [], [], 0

    def run(self):
        while not self.stop_ev.is_set():
            t0 = time.perf_counter()
            try:
                with urllib.request.urlopen(self.url, timeout=5) as r:
                    self.sizes.append(len(r.read()))
                self.times.append(time.perf_counter() - t0)
            except OSError:
                self.errors += 1
            self.stop_ev.wait(self.interval)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build-dir", default=str(driver.ROOT / "build-release"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5, help="seconds per sysbench run")
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between scrapes")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    dargs = types.SimpleNamespace(quick=True, rounds=args.rounds, duration=args.duration,
                                  build_dir=args.build_dir, workers=args.workers,
                                  log_level="warn", only=None)
    b = driver.Bench(dargs)
    if not b.credproxy_bin.exists():
        sys.exit("scrape_cost.py: %s is missing; run bench/run.sh --quick first" % b.credproxy_bin)
    try:
        b.start_mariadb()
        b.prepare_sysbench()
        admin_port = driver.free_port()
        svc = b.start_service("credproxy", "credproxy",
                              extra=("--admin-listen", "127.0.0.1:%d" % admin_port))
        b.services["credproxy"] = svc
        url = "http://127.0.0.1:%d/metrics" % admin_port
        driver.log("warm-up")
        b.run_sysbench("credproxy", "oltp_point_select", args.threads, 2)
        qps = {"none": [], "scrape": []}
        scrapes = []
        for rnd in range(args.rounds):
            for mode in (("none", "scrape") if rnd % 2 == 0 else ("scrape", "none")):
                scraper = Scraper(url, args.interval) if mode == "scrape" else None
                if scraper:
                    scraper.start()
                r = b.run_sysbench("credproxy", "oltp_point_select", args.threads, args.duration)
                if scraper:
                    scraper.stop_ev.set()
                    scraper.join()
                    scrapes.append(scraper)
                qps[mode].append(r["qps"] or 0.0)
                driver.log("round %d %-6s %.0f qps" % (rnd + 1, mode, r["qps"] or 0))
    finally:
        b.stop_all()
    times = [t for s in scrapes for t in s.times]
    sizes = [n for s in scrapes for n in s.sizes]
    errors = sum(s.errors for s in scrapes)
    none, with_scrape = statistics.median(qps["none"]), statistics.median(qps["scrape"])
    spread = max(qps["none"]) / min(qps["none"]) - 1 if min(qps["none"]) else 0
    print("point_select, %d threads, %d s x %d rounds, credproxy --workers %d" %
          (args.threads, args.duration, args.rounds, args.workers))
    print("  no scraper:          median %.0f qps  (runs: %s; spread %.1f %%)" %
          (none, ", ".join("%.0f" % q for q in qps["none"]), spread * 100))
    print("  /metrics every %.1fs: median %.0f qps  (runs: %s)" %
          (args.interval, with_scrape, ", ".join("%.0f" % q for q in qps["scrape"])))
    print("  ratio: %.3f" % (with_scrape / none if none else 0))
    if times:
        print("  scrapes: %d, %d errors, median %.2f ms, max %.2f ms, %d bytes" %
              (len(times), errors, statistics.median(times) * 1e3, max(times) * 1e3,
               statistics.median(sizes)))


if __name__ == "__main__":
    main()

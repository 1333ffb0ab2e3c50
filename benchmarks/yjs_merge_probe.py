"""Time merge() for a big doc + 4 KiB of updates; does pycrdt release the GIL?"""
import sys, threading, time
sys.path.insert(0, "/work/wt-yjslat"); sys.path.append("/work/wt-yjslat/benchmarks")
import pycrdt
from yjs_doc import Writer, prepending, typing
from state.yjs import merge

n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
kind = sys.argv[2] if len(sys.argv) > 2 else "prepending"
w = Writer()
ups = list(w.updates((prepending if kind == "prepending" else typing)(n)))
snap = merge(b"", ups[:-40])
tail = ups[-40:]
print(f"{n} edits ({kind}): snapshot {len(snap)} B, tail {sum(map(len, tail))} B")

def timed(label, fn):
    t = time.perf_counter(); fn(); print(f"  {label}: {(time.perf_counter()-t)*1000:.1f} ms")

timed("merge (current)", lambda: merge(snap, tail))
def apply_only():
    d = pycrdt.Doc(); d.apply_update(snap); [d.apply_update(u) for u in tail]; d.get_update(); d.get_state()
timed("apply+get_update", apply_only)
timed("merge_updates", lambda: pycrdt.merge_updates(snap, *tail))
timed("get_state(snap)", lambda: pycrdt.get_state(snap))

# GIL: main thread counts loop iterations (time.sleep(0) ticks with max gap) while a thread merges
done = threading.Event()
def worker():
    merge(snap, tail); done.set()
ticks, gap, last = 0, 0.0, time.perf_counter()
th = threading.Thread(target=worker); t0 = time.perf_counter(); th.start()
while not done.is_set():
    for _ in range(100): pass
    now = time.perf_counter(); gap = max(gap, now - last); last = now; ticks += 1
th.join()
print(f"  main loop during threaded merge: {ticks} ticks in {(time.perf_counter()-t0)*1000:.0f} ms, max gap {gap*1000:.1f} ms")
d = pycrdt.Doc(); d.apply_update(snap); sv = d.get_state()
timed("get_update(snap, sv)", lambda: pycrdt.get_update(snap, sv))
timed("merge (new) again", lambda: merge(snap, tail))

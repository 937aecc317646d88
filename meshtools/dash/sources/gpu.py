"""GPU samples through NVML (nvidia-ml-py, imported on first sample), with a short history
per GPU for the dash's sparklines.

A machine without NVML, a driver or a GPU is the usual case, not a failure: the sample then
says "no GPU (reason)" in `absent` and lists none.
"""

from collections import deque

HISTORY = 120  # samples kept per GPU: two minutes at the dash's 1 s cadence


def absent(reason: str) -> dict:
    return {"gpus": [], "absent": f"no GPU ({reason})"}


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def read_nvml() -> dict:
    """{gpus: [{index, name, util, mem_used, mem_total}], absent: None}, or absent(reason)
    when NVML, its library, a driver or a GPU is missing. util is None where the GPU does
    not report it (a MIG slice)."""
    try:
        import pynvml
    except ImportError:
        return absent("nvidia-ml-py is not installed")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        return absent(_text(e))
    try:
        count = pynvml.nvmlDeviceGetCount()
        if not count:
            return absent("NVML sees none")
        gpus = []
        for index in range(count):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            try:
                util = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
            except pynvml.NVMLError:
                util = None
            gpus.append({"index": index, "name": _text(pynvml.nvmlDeviceGetName(handle)),
                         "util": util, "mem_used": memory.used, "mem_total": memory.total})
        return {"gpus": gpus, "absent": None}
    except pynvml.NVMLError as e:
        return absent(_text(e))
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass  # the sample stands; the next one initialises afresh


class History:
    """The last `size` samples of each GPU's utilisation and memory use (per cent), by
    index: what a sparkline draws. A GPU missing from a sample gets None (a gap)."""

    def __init__(self, size: int = HISTORY):
        self.size = size
        self.util: dict[int, deque] = {}
        self.mem: dict[int, deque] = {}

    def add(self, sample: dict) -> dict:
        """Record sample (read_nvml's shape); the sample with each GPU's `util_history` and
        `mem_history` (oldest first) added."""
        seen = {gpu["index"]: gpu for gpu in sample["gpus"]}
        for index in seen.keys() | self.util.keys():
            gpu = seen.get(index)
            mem = (100.0 * gpu["mem_used"] / gpu["mem_total"]
                   if gpu and gpu["mem_total"] else None)
            self.util.setdefault(index, deque(maxlen=self.size)).append(
                gpu["util"] if gpu else None)
            self.mem.setdefault(index, deque(maxlen=self.size)).append(mem)
        gpus = [dict(gpu, util_history=list(self.util[gpu["index"]]),
                     mem_history=list(self.mem[gpu["index"]])) for gpu in sample["gpus"]]
        return dict(sample, gpus=gpus)


class Gpus:
    """The dash's gpu source: each call samples NVML and returns it with the history."""

    def __init__(self, size: int = HISTORY, read=read_nvml):
        self.history, self.read = History(size), read

    def __call__(self) -> dict:
        return self.history.add(self.read())

"""Driver time to map KV pages the way vAttention does (CUDA virtual memory management).

vAttention (arXiv 2405.04437) reserves each request's KV in contiguous virtual memory and maps
physical pages as it grows: per page ``cuMemCreate`` (a physical allocation), ``cuMemMap``
(into the reserved range) and ``cuMemSetAccess``; freeing is ``cuMemUnmap`` + ``cuMemRelease``.
This times each call for 512 mappings of 1, 4, 16 and 64 contiguous 2 MiB pages (the driver's
granularity) and writes ``$OUT/vmm_latency.csv`` (median, p10, p90, mean in microseconds;
the first 8 of each series are dropped as warm-up).

Run on the lent GPU through the device tool (the command was this file, compacted to the
tool's 2,000 characters); ``vmm_latency_h200_2026.csv`` beside it is what came back
(one H200, driver 580, CUDA 13.0, cuda-bindings of the machine's image, 2026-11-30).
"""

import csv
import os
import statistics
import time

from cuda.bindings import driver as d


def ok(result):  # type: ignore[no-untyped-def]
    err = result[0] if isinstance(result, tuple) else result
    assert err == d.CUresult.CUDA_SUCCESS, err
    return result[1] if isinstance(result, tuple) and len(result) == 2 else result


def main() -> None:
    ok(d.cuInit(0))
    dev = ok(d.cuDeviceGet(0))
    ok(d.cuCtxSetCurrent(ok(d.cuDevicePrimaryCtxRetain(dev))))
    prop = d.CUmemAllocationProp()
    prop.type = d.CUmemAllocationType.CU_MEM_ALLOCATION_TYPE_PINNED
    prop.location.type = d.CUmemLocationType.CU_MEM_LOCATION_TYPE_DEVICE
    prop.location.id = 0
    gran = ok(d.cuMemGetAllocationGranularity(
        prop, d.CUmemAllocationGranularity_flags.CU_MEM_ALLOC_GRANULARITY_MINIMUM))
    access = d.CUmemAccessDesc()
    access.location = prop.location
    access.flags = d.CUmemAccess_flags.CU_MEM_ACCESS_FLAGS_PROT_READWRITE
    rows, n = [], 512
    for pages in (1, 4, 16, 64):
        size = gran * pages
        base = ok(d.cuMemAddressReserve(size * n, 0, 0, 0))
        handles, times = [], {k: [] for k in ("create", "map", "access", "unmap", "release")}
        for i in range(n):
            va = int(base) + i * size
            t0 = time.perf_counter()
            h = ok(d.cuMemCreate(size, prop, 0))
            t1 = time.perf_counter()
            ok(d.cuMemMap(va, size, 0, h, 0))
            t2 = time.perf_counter()
            ok(d.cuMemSetAccess(va, size, [access], 1))
            t3 = time.perf_counter()
            times["create"].append(t1 - t0)
            times["map"].append(t2 - t1)
            times["access"].append(t3 - t2)
            handles.append((va, h))
        for va, h in handles:
            t0 = time.perf_counter()
            ok(d.cuMemUnmap(va, size))
            t1 = time.perf_counter()
            ok(d.cuMemRelease(h))
            t2 = time.perf_counter()
            times["unmap"].append(t1 - t0)
            times["release"].append(t2 - t1)
        ok(d.cuMemAddressFree(base, size * n))
        for api, v in times.items():
            v = sorted(v[8:])
            rows.append({"bytes": size, "pages_2mib": pages, "api": api, "n": len(v),
                         "median_us": 1e6 * statistics.median(v), "p10_us": 1e6 * v[len(v) // 10],
                         "p90_us": 1e6 * v[9 * len(v) // 10], "mean_us": 1e6 * statistics.mean(v)})
    with open(f"{os.environ.get('OUT', '.')}/vmm_latency.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print("granularity", gran, "driver", ok(d.cuDriverGetVersion()))


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# The 16 shards of 100M requests on 10,000 GPUs, each alone and all at once (no merge), on the
# device host's CPUs (no GPU used). Usage: bash .devcarry/run16.sh start | wait N
set -u
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
REPO=$PWD
W=/tmp/run16
mkdir -p $W
if [ "$1" = start ]; then
  T0=$(date +%s)
  { date -u; nproc --all; lscpu | head -20; free -g; python3 --version; git -C $REPO log --oneline -1 2>/dev/null; } > $W/machine.txt 2>&1
  python3 -m pip install --no-deps --no-build-isolation --no-index --target /tmp/site . > $W/install.log 2>&1
  echo "install rc=$? after $(( $(date +%s) - T0 )) s" >> $W/machine.txt
  export PYTHONPATH=/tmp/site:$REPO/.devcarry/site
  ( cd /tmp && python3 -c "import simkv, pathlib; p=pathlib.Path(simkv.__file__).with_name('_compiled.json'); print(simkv.__file__); print(p.read_text()[:200] if p.exists() else 'NOT COMPILED')" ) >> $W/machine.txt 2>&1
  cd /tmp
  for s in $(seq 0 15); do
    setsid nohup bash -c "echo start \$(date -u +%T) > $W/s$s.log; /usr/bin/time -v python3 $REPO/benchmarks/bench_shards.py --requests 100000000 --replicas 10000 --shards 16 --only-shard $s --router power_of_two --record $W/s$s.jsonl >> $W/s$s.log 2>&1; echo \"rc=\$? end \$(date -u +%T)\" >> $W/s$s.log" > /dev/null 2>&1 < /dev/null &
  done
  sleep 20
  { uptime; free -g | head -2; } > $W/after_start.txt 2>&1
  cp $W/machine.txt $W/install.log $W/after_start.txt $OUT/ 2>/dev/null
  exit 0
fi
if [ "$1" = wait ]; then
  T0=$(date +%s)
  LIM=${2:-560}
  while [ $(( $(date +%s) - T0 )) -lt $LIM ]; do
    [ $(grep -l "^rc=" $W/s*.log 2>/dev/null | wc -l) -ge 16 ] && break
    { date -u +%T; uptime; free -g | sed -n 2p; } >> $W/monitor.txt
    sleep 15
  done
  cat $W/s*.jsonl > $OUT/shards.jsonl 2>/dev/null
  tail -n 40 $W/s*.log > $OUT/shard_logs.txt 2>/dev/null
  cp $W/machine.txt $W/monitor.txt $OUT/ 2>/dev/null
  exit 0
fi

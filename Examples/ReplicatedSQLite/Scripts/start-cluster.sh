# Sourced by cluster-test.sh and throughput.sh: starts three replicas of "$bin" as processes,
# each writing "$work/node-N.log", on free loopback ports from the kernel (bound to port 0 and
# read back). Arguments after the function name are passed to every replica.
# Sets: members, http (http[N] is node N's HTTP port), cluster_id, pids (pids[N]).
start_cluster() {
  local ports
  ports=($(python3 -c 'import socket
s=[socket.socket() for _ in range(9)]
[x.bind(("127.0.0.1",0)) for x in s]
print(" ".join(str(x.getsockname()[1]) for x in s))'))
  members="1=127.0.0.1:${ports[0]}:${ports[1]},2=127.0.0.1:${ports[2]}:${ports[3]},3=127.0.0.1:${ports[4]}:${ports[5]}"
  http=("" "${ports[6]}" "${ports[7]}" "${ports[8]}")
  cluster_id="$(python3 -c 'import uuid; print(uuid.uuid4())')"
  for n in 1 2 3; do
    "$bin" --id "$n" --members "$members" --data "$work/node-$n" --http "${http[$n]}" --bootstrap "$cluster_id" \
      "$@" >"$work/node-$n.log" 2>&1 &
    pids[$n]=$!
  done
}

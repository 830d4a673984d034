// Driver of `egret handler build` for JavaScript/TypeScript (run by egret with node, from a
// temporary directory whose node_modules is the toolchain's):
//   node build.mjs USER_FILE SDK_FILE WIT_FILE WORK_DIR OUT_FILE
// 1. esbuild bundles the handler, its imports and the SDK into one ES module (TypeScript is
//    stripped of its types here; `tsc --noEmit` is the type checker), keeping the
//    egret:handler/* imports for the component's imports;
// 2. componentize-js turns the bundle into a component for the world `handler`, with every
//    WASI feature disabled so the component imports nothing beyond the handler world.
import { writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";

const [userFile, sdkFile, witFile, workDir, outFile] = process.argv.slice(2);

function fail(msg) {
  process.stderr.write(`${msg}\n`);
  process.exit(2);
}

let esbuild, componentize;
try {
  esbuild = await import("esbuild");
  ({ componentize } = await import("@bytecodealliance/componentize-js"));
} catch (e) {
  fail(`toolchain missing: ${e.message}`);
}

const entry = join(workDir, "entry.js");
await writeFile(
  entry,
  `import * as user from ${JSON.stringify(userFile)};
import { __exports } from "egret-handler";
const e = __exports(user);
export const handle = e.handle;
export const onResponse = e.onResponse;
export const onResponseChunk = e.onResponseChunk;
export const onResponseEnd = e.onResponseEnd;
export const onResponseEvent = e.onResponseEvent;
`,
);

const sdkPlugin = {
  name: "egret-handler-sdk",
  setup(b) {
    b.onResolve({ filter: /^egret-handler$/ }, () => ({ path: sdkFile }));
  },
};

function esbuildFailure(e) {
  const lines = (e.errors ?? []).map((m) => {
    const l = m.location;
    return l ? `${resolve(process.cwd(), l.file)}:${l.line}:${l.column + 1}: ${m.text}\n    ${l.lineText}` : m.text;
  });
  fail(lines.length ? lines.join("\n") : String(e));
}

// The handler's own exports, so a missing `handle` is named here rather than failing inside
// componentize-js's initialisation (where the engine has no stderr to say why).
try {
  const probe = await esbuild.build({
    entryPoints: [userFile],
    bundle: true,
    write: false,
    metafile: true,
    format: "esm",
    platform: "neutral",
    external: ["egret:*"],
    logLevel: "silent",
    plugins: [sdkPlugin],
  });
  const exported = Object.values(probe.metafile.outputs)[0]?.exports ?? [];
  if (!exported.includes("handle")) {
    fail(
      `${userFile}: the handler module must export a function \`handle(req, ctx)\` ` +
        `(it exports: ${exported.length ? exported.join(", ") : "nothing"})`,
    );
  }
} catch (e) {
  esbuildFailure(e);
}

const bundle = join(workDir, "bundle.js");
try {
  await esbuild.build({
    entryPoints: [entry],
    outfile: bundle,
    bundle: true,
    format: "esm",
    platform: "neutral",
    target: "es2022",
    external: ["egret:*"],
    logLevel: "silent",
    plugins: [sdkPlugin],
  });
} catch (e) {
  esbuildFailure(e);
}

let out;
try {
  out = await componentize({
    sourcePath: bundle,
    witPath: witFile,
    worldName: "handler",
    disableFeatures: ["stdio", "random", "clocks", "http", "fetch-event"],
  });
} catch (e) {
  fail(`componentize-js: ${e.message ?? e}`);
}
await writeFile(outFile, out.component);

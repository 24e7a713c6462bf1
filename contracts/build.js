#!/usr/bin/env node
// Compile contracts/src/*.sol with the pinned solc-js (package-lock.json) and write one
// artifact per deployable contract to contracts/artifacts/<Name>.json.
//
//   node build.js                 write contracts/artifacts/
//   node build.js --out DIR       write to DIR instead (tests compare it with the committed ones)
//   node build.js --check         exit 1 if contracts/artifacts/ differs from a fresh build
//   node build.js --harness DIR   also compile the test-only contracts/test/*.sol into DIR
//
// Settings are fixed here: evmVersion "prague" (py-evm stops at Prague), optimizer on,
// runs per contract below (the verifier's constants as PUSH32, never CODECOPY), no viaIR, metadata with the default IPFS hash over the sources' contents.
"use strict";

const fs = require("fs");
const path = require("path");
const solc = require("solc");

const ROOT = __dirname;
const SRC = path.join(ROOT, "src");
const DEPLOYABLE = ["BulletproofVerifier", "ZkMeterSettlement", "ZkMeterTestToken"];
const SOLC_VERSION = "0.8.37";
// The verifier runs hot loops over constant generators: 1,000,000 runs. The settlement would
// exceed EIP-170's 24,576-byte code limit at that setting, so it (and everything else) is
// optimized for 2,000 runs; its per-leaf loop is assembly, which the setting barely touches.
const RUNS = { BulletproofVerifier: 1000000 };
const DEFAULT_RUNS = 2000;
const SETTINGS = {
  evmVersion: "prague",
  optimizer: { enabled: true, runs: DEFAULT_RUNS },
  outputSelection: {
    "*": {
      "*": [
        "abi",
        "evm.bytecode.object",
        "evm.deployedBytecode.object",
        "evm.deployedBytecode.immutableReferences",
        "evm.methodIdentifiers",
      ],
    },
  },
};

// Imports outside src/ come from the pinned npm packages (OpenZeppelin), never the network.
function findImports(importPath) {
  if (!importPath.startsWith("@openzeppelin/contracts/")) {
    return { error: `import ${importPath} is not from @openzeppelin/contracts` };
  }
  try {
    return { contents: fs.readFileSync(path.join(ROOT, "node_modules", importPath), "utf8") };
  } catch (err) {
    return { error: `cannot read ${importPath}: run npm ci in contracts/ (${err.message})` };
  }
}

function compile(withHarness) {
  if (!solc.version().startsWith(SOLC_VERSION + "+")) {
    throw new Error(`solc ${solc.version()} is not the pinned ${SOLC_VERSION}`);
  }
  const artifacts = {};
  for (const runs of new Set([DEFAULT_RUNS, ...Object.values(RUNS)])) {
    const pass = compileWith(withHarness && runs === DEFAULT_RUNS, runs);
    for (const [name, text] of Object.entries(pass)) {
      if ((RUNS[name] || DEFAULT_RUNS) === runs) artifacts[name] = text;
    }
  }
  for (const name of DEPLOYABLE) {
    if (!artifacts[name]) throw new Error(`contract ${name} not found in the sources`);
  }
  return artifacts;
}

function compileWith(withHarness, runs) {
  const settings = { ...SETTINGS, optimizer: { enabled: true, runs } };
  const sources = {};
  for (const name of fs.readdirSync(SRC).filter((f) => f.endsWith(".sol")).sort()) {
    sources[`src/${name}`] = { content: fs.readFileSync(path.join(SRC, name), "utf8") };
  }
  if (withHarness) {
    const testDir = path.join(ROOT, "test");
    for (const name of fs.readdirSync(testDir).filter((f) => f.endsWith(".sol")).sort()) {
      sources[`test/${name}`] = { content: fs.readFileSync(path.join(testDir, name), "utf8") };
    }
  }
  const input = { language: "Solidity", sources, settings };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
  const errors = (output.errors || []).filter((e) => e.severity === "error");
  // warnings once (the default pass compiles everything); errors from every pass
  for (const e of output.errors || []) {
    if (runs === DEFAULT_RUNS || e.severity === "error") process.stderr.write(e.formattedMessage + "\n");
  }
  if (errors.length) throw new Error(`${errors.length} compilation error(s)`);
  const artifacts = {};
  for (const [file, contracts] of Object.entries(output.contracts)) {
    for (const [name, c] of Object.entries(contracts)) {
      const harness = file.startsWith("test/");
      if (!DEPLOYABLE.includes(name) && !harness) continue;
      const artifact = {
        contractName: name,
        sourceName: file,
        compiler: { version: solc.version(), settings: { evmVersion: settings.evmVersion, optimizer: settings.optimizer } },
        abi: c.abi,
        bytecode: "0x" + c.evm.bytecode.object,
        deployedBytecode: "0x" + c.evm.deployedBytecode.object,
        immutableReferences: c.evm.deployedBytecode.immutableReferences || {},
        methodIdentifiers: c.evm.methodIdentifiers,
      };
      artifacts[name] = JSON.stringify(artifact, null, 2) + "\n";
    }
  }
  return artifacts;
}

function main(argv) {
  const check = argv.includes("--check");
  const outIdx = argv.indexOf("--out");
  const harnessIdx = argv.indexOf("--harness");
  if (harnessIdx >= 0) {
    const dir = path.resolve(argv[harnessIdx + 1]);
    fs.mkdirSync(dir, { recursive: true });
    for (const [name, text] of Object.entries(compile(true))) {
      fs.writeFileSync(path.join(dir, `${name}.json`), text);
    }
    return 0;
  }
  const outDir = outIdx >= 0 ? path.resolve(argv[outIdx + 1]) : path.join(ROOT, "artifacts");
  const artifacts = compile(false);
  if (check) {
    let stale = false;
    for (const [name, text] of Object.entries(artifacts)) {
      const file = path.join(ROOT, "artifacts", `${name}.json`);
      if (!fs.existsSync(file) || fs.readFileSync(file, "utf8") !== text) {
        process.stderr.write(`stale: contracts/artifacts/${name}.json (run: cd contracts && npm run build)\n`);
        stale = true;
      }
    }
    return stale ? 1 : 0;
  }
  fs.mkdirSync(outDir, { recursive: true });
  for (const [name, text] of Object.entries(artifacts)) {
    fs.writeFileSync(path.join(outDir, `${name}.json`), text);
  }
  return 0;
}

try {
  process.exitCode = main(process.argv.slice(2));
} catch (err) {
  process.stderr.write(String(err.message || err) + "\n");
  process.exitCode = 2;
}

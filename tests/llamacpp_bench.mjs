// llama.cpp's speed on the GGUF files `make bench` times run.c on, for the comparison in README's Speed
// section: node-llama-cpp's prebuilt llama.cpp (npm; `make bench-llamacpp` installs it in build/llamacpp),
// which ships one CPU library per x86 level and loads the best this CPU runs. --cpu picks levels to
// compare with run.c's kernel sets: haswell (AVX2 + FMA, like run.c's avx2), icelake (AVX-512 VNNI, like
// avx512), best (whatever llama.cpp picks, e.g. sapphirerapids with AMX).
//   node tests/llamacpp_bench.mjs [--shapes 110m,1.1b] [--dtypes F32,F16,Q8_0,Q4_0,Q6_K,Q4_K_M,Q4_1,Q5_0,Q5_1,Q5_K_M,IQ4_NL,IQ4_XS,Q2_K,Q3_K]
//                                 [--threads 1,2] [--cpu haswell,icelake,best] [--prompt 512] [--gen 32]
//                                 [--after 1] [--fa 1]
// Generation: --gen tokens one at a time after one, greedy (node-llama-cpp's sampler, a few percent of a
// 110M token's time); prefill: one prompt of --prompt tokens in one batch. Best of 3 runs each.
// --after 1 (make bench-long's comparison): one run, generation going on after the prompt, so at its
// depth; --fa 1 turns on llama.cpp's flash attention (its tiled CPU kernel, llama-cli's "auto" on a CPU).
import {spawnSync} from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import {fileURLToPath, pathToFileURL} from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.join(here, "..");
const modules = path.join(root, "build", "llamacpp", "node_modules");

async function child(model, threads, prompt, gen, after, fa) { // one model at one thread count, in this process
    const {getLlama} = await import(pathToFileURL(path.join(modules, "node-llama-cpp", "dist", "index.js")).href);
    let cpu = "?";
    const logger = (level, message) => {
        const m = /loaded CPU backend from .*libggml-cpu-([a-z0-9_]+)\.so/.exec(message);
        if (m) cpu = m[1];
    };
    const llama = await getLlama({gpu: false, build: "never", logLevel: "debug", logger});
    const m = await llama.loadModel({modelPath: model, gpuLayers: 0, useMmap: true});
    const vocab = m.fileInfo.metadata.llama?.vocab_size ?? m.fileInfo.metadata.tokenizer?.ggml?.tokens?.length ?? 32000;
    const ctx = await m.createContext({contextSize: prompt + gen + 16, batchSize: prompt,
                                       threads: {ideal: threads, min: threads}, flashAttention: fa});
    const tokens = Array.from({length: prompt}, (_, i) => 3 + ((i * 7919) % (vocab - 3)));
    let pp = 0, tg = 0;
    for (let rep = 0; rep < (after ? 1 : 3); rep++) {
        const seq = ctx.getSequence();
        let t0 = performance.now();
        await seq.evaluateWithoutGeneratingNewTokens(tokens);
        pp = Math.max(pp, prompt / ((performance.now() - t0) / 1000));
        if (!after) await seq.clearHistory();
        t0 = performance.now();
        let n = 0;
        for await (const token of seq.evaluate([1], {temperature: 0})) { void token; if (++n >= gen) break; }
        tg = Math.max(tg, gen / ((performance.now() - t0) / 1000));
        seq.dispose();
    }
    console.log(JSON.stringify({cpu, gen: tg, pp}));
    await ctx.dispose();
    await m.dispose();
    await llama.dispose();
}

function cpuLibraries() {
    const dir = path.join(modules, "@node-llama-cpp", "linux-x64", "bins", "linux-x64");
    return {dir, names: fs.readdirSync(dir).filter(f => /^libggml-cpu-.*\.so(\.off)?$/.test(f)).map(f => f.replace(/\.off$/, ""))};
}

// Leaves only libggml-cpu-<keep>.so loadable (the others renamed *.off), or all of them for keep = null.
function only(keep) {
    const {dir, names} = cpuLibraries();
    for (const name of names) {
        const on = path.join(dir, name), off = on + ".off", want = keep === null || name === `libggml-cpu-${keep}.so`;
        if (want && fs.existsSync(off)) fs.renameSync(off, on);
        if (!want && fs.existsSync(on)) fs.renameSync(on, off);
    }
}

async function main() {
    const args = process.argv.slice(2);
    if (args[0] === "--child") return child(args[1], +args[2], +args[3], +args[4], args[5] === "1", args[6] === "1");
    const opt = {shapes: "110m,1.1b", dtypes: "F32,F16,Q8_0,Q4_0,Q6_K,Q4_K_M,Q4_1,Q5_0,Q5_1,Q5_K_M,IQ4_NL,IQ4_XS,Q2_K,Q3_K", threads: "1,2", cpu: "haswell,icelake,best", prompt: "512", gen: "32",
                 after: "0", fa: "0"};
    for (let i = 0; i < args.length; i += 2) {
        const key = args[i].replace(/^--/, "");
        if (!(key in opt) || i + 1 >= args.length) {
            console.error(`llamacpp_bench: unknown option ${args[i]} (options: ${Object.keys(opt).map(k => "--" + k).join(" ")})`);
            process.exit(2);
        }
        opt[key] = args[i + 1];
    }
    const list = s => s.split(",").filter(Boolean);
    process.on("exit", () => only(null));
    console.log("llama.cpp (node-llama-cpp's prebuilt CPU libraries), " + (opt.after === "1" ? "one run" : "best of 3") + "; generation: " +
                opt.gen + " tokens" + (opt.after === "1" ? " after the prompt" : "") + ", prefill: one " + opt.prompt + "-token prompt" +
                (opt.fa === "1" ? "; flash attention" : "") + "\n");
    console.log("| model | dtype | llama.cpp CPU library | thr | gen tok/s | pp tok/s |");
    console.log("|---|---|---|---|---|---|");
    for (const shape of list(opt.shapes))
        for (const dtype of list(opt.dtypes)) {
            const made = spawnSync("/usr/bin/python3", [path.join(here, "bench_models.py"), shape, dtype], {encoding: "utf8", stdio: ["ignore", "pipe", "inherit"]});
            if (made.status !== 0) { console.error(`llamacpp_bench: no ${shape} ${dtype} model`); continue; }
            const model = made.stdout.trim();
            for (const threads of list(opt.threads))
                for (const cpu of list(opt.cpu)) {
                    const {names} = cpuLibraries();
                    if (cpu !== "best" && !names.includes(`libggml-cpu-${cpu}.so`)) { console.error(`llamacpp_bench: no CPU library ${cpu}`); continue; }
                    only(cpu === "best" ? null : cpu);
                    const run = spawnSync(process.execPath, [fileURLToPath(import.meta.url), "--child", model, threads, opt.prompt, opt.gen, opt.after, opt.fa],
                                          {encoding: "utf8"});
                    only(null);
                    const line = (run.stdout || "").trim().split("\n").pop();
                    let r;
                    try { r = JSON.parse(line); } catch { console.error(`llamacpp_bench: ${shape} ${dtype} ${cpu}: ${(run.stderr || "").trim().split("\n").pop()}`); continue; }
                    if (cpu !== "best" && r.cpu !== cpu) { console.error(`llamacpp_bench: this CPU cannot run ${cpu} (llama.cpp took ${r.cpu})`); continue; }
                    console.log(`| ${shape} | ${dtype} | ${cpu === "best" ? r.cpu + " (best)" : r.cpu} | ${threads} | ${r.gen.toFixed(1)} | ${r.pp.toFixed(1)} |`);
                }
        }
}

await main();

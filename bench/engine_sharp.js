#!/usr/bin/env node
// sharp worker for the engine section: same protocol as engine_worker.py.
//   NODE_PATH=/tmp/bench/sharp/node_modules node bench/engine_sharp.js \
//       --workload 12mp/jpeg800 --mode latency|throughput --images /tmp/bench/images
// latency: 3 warm-up ops, then one op at a time until min-iters and min-time are reached;
// throughput: warm-up, print {"ready":true}, wait for "go SECONDS" on stdin, loop that long.
// One JSON line on stdout. Buffer -> buffer; sharp's operation cache is off.
'use strict';
const fs = require('fs');
const path = require('path');

function arg(name, dflt) {
  const i = process.argv.indexOf('--' + name);
  return i >= 0 ? process.argv[i + 1] : dflt;
}

let sharp;
try {
  sharp = require('sharp');
} catch (e) {
  process.stdout.write(JSON.stringify({ error: 'cannot load sharp: ' + e.message, engine: 'sharp' }) + '\n');
  process.exit(3);
}

const workloads = JSON.parse(fs.readFileSync(path.join(__dirname, 'workloads.json'), 'utf8')).workloads;
const name = arg('workload');
const w = workloads.find((x) => x.name === name);
if (!w) { console.error('unknown workload ' + name); process.exit(2); }
const mode = arg('mode', 'latency');
const minIters = Number(arg('min-iters', '30'));
const minTime = Number(arg('min-time', '2.0'));
const maxIters = Number(arg('max-iters', '300'));
const data = fs.readFileSync(path.join(arg('images', '/tmp/bench/images'), w.source));

sharp.cache(false);
sharp.concurrency(Number(process.env.VIPS_CONCURRENCY || '1'));

async function op() {
  let p = sharp(data);
  if (w.height && w.fit === 'cover') p = p.resize(w.width, w.height, { fit: 'cover' });
  else p = p.resize(w.width);
  if (w.format === 'jpeg') p = p.flatten({ background: '#ffffff' }).jpeg({ quality: 80 });
  else if (w.format === 'webp') p = p.webp({ quality: 80, effort: 4 });
  else throw new Error(w.format);
  const { data: out, info } = await p.toBuffer({ resolveWithObject: true });
  return [out, info.width, info.height];
}

const now = () => Number(process.hrtime.bigint()) / 1e6; // ms
const cpu = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1000; }; // ms
const rssKb = () => Math.round(process.memoryUsage().rss / 1024);
const hwmKb = () => process.resourceUsage().maxRSS; // kB

async function main() {
  const common = {
    engine: 'sharp', version: `sharp ${sharp.versions.sharp}, libvips ${sharp.versions.vips}`,
    workload: name, pid: process.pid, vips_concurrency: String(sharp.concurrency()),
  };
  if (mode === 'latency') {
    let r;
    const rssBase = rssKb();
    for (let i = 0; i < 3; i++) r = await op();
    const walls = [], cpus = [];
    const t0 = now();
    while (walls.length < maxIters && (walls.length < minIters || now() - t0 < minTime * 1000)) {
      const c = cpu(), t = now();
      r = await op();
      walls.push(now() - t); cpus.push(cpu() - c);
    }
    process.stdout.write(JSON.stringify({ ...common, mode, wall_ms: walls, cpu_ms: cpus,
      bytes: r[0].length, out_w: r[1], out_h: r[2], rss_base_kb: rssBase, hwm_kb: hwmKb() }) + '\n');
    return;
  }
  let r = await op();
  process.stdout.write(JSON.stringify({ ready: true }) + '\n');
  const line = await new Promise((resolve) => {
    let buf = '';
    process.stdin.on('data', (d) => { buf += d; const i = buf.indexOf('\n'); if (i >= 0) resolve(buf.slice(0, i)); });
    process.stdin.on('end', () => resolve(buf));
  });
  const parts = line.trim().split(/\s+/);
  if (parts[0] !== 'go') process.exit(2);
  const duration = Number(parts[1]) * 1000;
  let n = 0;
  const c0 = cpu(), t0 = now();
  let t1;
  for (;;) {
    r = await op(); n++;
    t1 = now();
    if (t1 - t0 >= duration) break;
  }
  const c1 = cpu();
  process.stdout.write(JSON.stringify({ ...common, mode, images: n, seconds: (t1 - t0) / 1000,
    cpu_s: (c1 - c0) / 1000, bytes: r[0].length, out_w: r[1], out_h: r[2], hwm_kb: hwmKb() }) + '\n');
  process.stdin.pause();
}

main().catch((e) => { process.stdout.write(JSON.stringify({ error: String(e), engine: 'sharp' }) + '\n'); process.exit(1); });

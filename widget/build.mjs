// Bundles src/main.js and JsSIP into one minified IIFE.
//
//   node build.mjs --outfile PATH [--node-modules DIR]
//
// --node-modules names the node_modules to take esbuild and JsSIP from when they are not installed next to
// this file: cargo's build.rs installs them into its OUT_DIR so that concurrent builds never share one tree.
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const option = (name) => {
  const at = args.indexOf(name);
  return at >= 0 && at + 1 < args.length ? args[at + 1] : null;
};
const outfile = option('--outfile');
if (!outfile) {
  console.error('usage: node build.mjs --outfile PATH [--node-modules DIR]');
  process.exit(2);
}
const nodeModules = resolve(option('--node-modules') || join(here, 'node_modules'));
const require = createRequire(join(nodeModules, 'resolve-from-here.js'));
const esbuild = require('esbuild');

await esbuild.build({
  entryPoints: [join(here, 'src', 'main.js')],
  outfile: resolve(outfile),
  nodePaths: [nodeModules],
  bundle: true,
  format: 'iife',
  platform: 'browser',
  // es2019 syntax runs in every browser with the WebRTC JsSIP needs (Safari 14.1+, Chrome 80+, Firefox 78+).
  target: 'es2019',
  minify: true,
  legalComments: 'inline',
  loader: { '.css': 'text' },
  define: { 'process.env.NODE_ENV': '"production"' },
  banner: { js: '/* callgate click-to-call widget; bundles JsSIP (MIT, jssip.net) */' },
  logLevel: 'warning',
});

// Runs graphql-http's GraphQL-over-HTTP server audits against a live endpoint.
//   node http-audit.mjs http://127.0.0.1:PORT/graphql
// Prints one line per audit; exits 1 when any audit ends in an error or a warning.
import { serverAudits } from 'graphql-http';

const url = process.argv[2];
if (!url) {
  console.error('usage: node http-audit.mjs <graphql url>');
  process.exit(2);
}

const results = await Promise.all(
  serverAudits({ url }).map(async ({ id, name, fn }) => ({ id, name, ...(await fn()) })),
);
const count = {};
for (const { id, name, status, reason } of results) {
  count[status] = (count[status] ?? 0) + 1;
  const detail = status === 'ok' ? '' : ` -- ${reason}`;
  console.log(`${status.padEnd(6)} ${id} ${name}${detail}`);
}
console.log(`audits: ${JSON.stringify(count)}`);
process.exit((count.error ?? 0) + (count.warn ?? 0) > 0 ? 1 : 0);

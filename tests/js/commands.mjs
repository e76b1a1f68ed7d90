// The stdin side of the test drivers (driver.mjs, stanza_driver.mjs): one JSON command per
// line, run in order; a failing command is reported as an "error" event, not a crash.
import readline from "node:readline";

export const say = (o) => console.log(JSON.stringify(o));

export function serveCommands(command) {
  const rl = readline.createInterface({ input: process.stdin });
  let chain = Promise.resolve();
  rl.on("line", (line) => {
    chain = chain
      .then(() => command(JSON.parse(line)))
      .catch((err) => say({ ev: "error", error: String(err) }));
  });
  rl.on("close", () => chain.then(() => process.exit(0)));
}

// A StanzaJS client over BOSH the integration tests drive over stdin/stdout (like driver.mjs).
// Usage: node stanza_driver.mjs BOSH_URL DOMAIN USER PASSWORD RESOURCE
// Commands (stdin): {"op":"send","to":J,"body":B,"id":I}  {"op":"mam","with":J}
//   {"op":"cut"} (the BOSH session is abandoned without type='terminate', as when a tab loses
//   the network; StanzaJS reconnects in a new BOSH session and resumes, XEP-0198)
//   {"op":"stop"}
// Events (stdout): {"ev":"online",jid,sm,id}  {"ev":"message",from,body,id,stanza_id}
//   {"ev":"mam",items:[{from,body}]}  {"ev":"resumed",sid}  {"ev":"cut",sid}
//   {"ev":"error",error}  {"ev":"stopped"}
import * as XMPP from "stanza";
import { say, serveCommands } from "./commands.mjs";

const [url, domain, username, password, resource] = process.argv.slice(2);
const client = XMPP.createClient({
  jid: `${username}@${domain}`,
  password,
  resource,
  server: domain,
  transports: { websocket: false, bosh: url },
  autoReconnect: true,
  useStreamManagement: true,
});
if (process.env.STANZA_DEBUG) {
  client.on("raw", (dir, data) => console.error(dir, data));
  client.on("*", (name) => console.error("event", name));
}
client.on("stream:error", (err) => say({ ev: "error", error: JSON.stringify(err) }));
client.on("stream:management:resumed", () => say({ ev: "resumed", sid: client.transport?.sid }));
client.on("message", (msg) => {
  if (msg.archive || msg.body === undefined) return;
  const sid = (msg.stanzaIds || [])[0];
  say({ ev: "message", from: msg.from, body: msg.body, id: msg.id, stanza_id: sid?.id });
});

async function command(cmd) {
  if (cmd.op === "send") {
    client.sendMessage({ to: cmd.to, type: "chat", id: cmd.id, body: cmd.body });
  } else if (cmd.op === "mam") {
    const res = await client.searchHistory({ with: cmd.with });
    const items = res.results.map((r) => ({
      from: r.item?.message?.from,
      body: r.item?.message?.body,
    }));
    say({ ev: "mam", items });
  } else if (cmd.op === "cut") {
    // Abandon the BOSH session as a lost network would: no terminate request, nothing more
    // read from it (its held request may still come back: dropped).
    // First let what is queued go out: StanzaJS waits for its queue to drain before it
    // reconnects, and an abandoned transport never sends it.
    const transport = client.transport;
    for (let i = 0; i < 50 && transport.queue.length; i++) await new Promise((r) => setTimeout(r, 100));
    const sid = transport.sid;
    transport.isEnded = true;
    transport.removeAllListeners("data");
    transport.disconnect(false);
    say({ ev: "cut", sid });
  } else if (cmd.op === "stop") {
    await client.disconnect();
    say({ ev: "stopped" });
    process.exit(0);
  }
}

const online = new Promise((resolve, reject) => {
  client.once("session:started", () => resolve());
  setTimeout(() => reject(new Error("login timeout")), 20000);
});
client.connect();
try {
  await online;
  // Stream management is enabled after bind, a moment after session:started.
  for (let i = 0; i < 50 && !client.sm.started; i++) await new Promise((r) => setTimeout(r, 100));
  client.sendPresence(); // available: messages to the bare JID reach us
  say({ ev: "online", jid: client.jid, sm: client.sm.started, id: client.sm.id });
} catch (err) {
  say({ ev: "error", error: String(err) });
  process.exit(1);
}
serveCommands(command);

// Logs in twice with xmpp.js (an independent implementation of SASL2, Bind2 and FAST):
// first with the password, asking for a FAST token; then with that token and a wrong
// password, so only FAST can succeed. Prints one JSON line per login.
// Usage: node sasl2_fast.mjs PORT DOMAIN USER PASSWORD [SECOND_PORT]
// (SECOND_PORT: the FAST login goes to another node of the cluster.)
import { client, xml } from "@xmpp/client";

const [port, domain, username, password, secondPort] = process.argv.slice(2);
const agentId = "5c6f5e46-3b0c-4a6e-9d4a-1d6a0c3f2b10";
let saved = null;

function connect(pass, to) {
  const xmpp = client({
    service: `xmpp://127.0.0.1:${to}`,
    domain,
    username,
    password: pass,
    resource: "phone",
    userAgent: xml("user-agent", { id: agentId }, xml("software", {}, "xes-test"), xml("device", {}, "ci")),
  });
  xmpp.fast.saveToken = async (t) => { saved = t; };
  xmpp.fast.fetchToken = async () => saved;
  xmpp.on("error", (err) => console.error("error", String(err)));
  return xmpp;
}

async function login(pass, step, to) {
  const xmpp = connect(pass, to);
  const mechanisms = [];
  xmpp.on("nonza", (el) => {
    if (el.is("success", "urn:xmpp:sasl:2")) mechanisms.push("sasl2-success");
  });
  const started = Date.now();
  const address = await Promise.race([
    xmpp.start(),
    new Promise((_, reject) => setTimeout(() => reject(new Error("timeout")), 15000)),
  ]);
  const reply = await xmpp.iqCaller.request(
    xml("iq", { type: "get", to: domain }, xml("ping", { xmlns: "urn:xmpp:ping" })),
  );
  console.log(JSON.stringify({
    step, jid: address.toString(), token: saved,
    sasl2: mechanisms.length > 0, ping: reply.attrs.type, ms: Date.now() - started,
    sm: xmpp.streamManagement.enabled, smId: xmpp.streamManagement.id || null,
  }));
  await xmpp.stop();
}

try {
  await login(password, "password", port);
  await login("not-the-password", "fast", secondPort || port);
} catch (err) {
  console.log(JSON.stringify({ step: "failed", error: String(err) }));
}
process.exit(0);

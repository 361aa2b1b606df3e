// The demo's notifier, written against the documented protocol only (docs/PROTOCOL.md):
// nats.js for NATS, Ajv and the exported JSON Schemas for every message. It takes
// notify_escalation handoffs from triage, drafts the email, has the runtime send it, and
// ends with a claim the runtime verifies against the evidence of the send.
//
//   CLAIMCHECK_NATS_URL=nats://127.0.0.1:4280 \
//   CLAIMCHECK_CREDENTIALS=.claimcheck/credentials/agent-notifier.json node dist/notifier.js
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { type ConnectionOptions, connect, credsAuthenticator, type Msg } from "nats";
import { Inbox } from "./inbox.js";
import { Refused, RuntimeClient } from "./runtime.js";
import { SchemaError, Schemas } from "./schemas.js";

const AGENT = "notifier";
const TASK = "notify_escalation";
const HERE = dirname(dirname(fileURLToPath(import.meta.url)));

interface Handoff {
  handoffId: string;
  workflowId: string;
  task: string;
  artifactId: string;
}

interface Escalation {
  complaint: { customer: string; text: string };
  decision: { severity: string; team_email: string; rationale: string };
  ticket: string;
}

interface Evidence {
  auditId: string;
  refs: Record<string, string>;
}

/** Refusals a redelivery may change: anything else is final for this handoff. */
const RETRYABLE = new Set(["internal"]);

/** One handling of a handoff: each request a step keyed `<handoffId>/<n>` (section 5). */
class Handling {
  private n = 0;

  constructor(
    private readonly client: RuntimeClient,
    private readonly schemas: Schemas,
    private readonly handoff: Handoff,
  ) {}

  private step<T>(op: string, fields: Record<string, unknown>): Promise<T> {
    const stepKey = `${this.handoff.handoffId}/${++this.n}`;
    return this.client.call<T>(op, { workflowId: this.handoff.workflowId, stepKey, ...fields });
  }

  async run(): Promise<void> {
    const { workflowId, handoffId, task, artifactId } = this.handoff;
    // Steps 1 and 2 (intent, context) and the artifact in one request (section 4).
    // Replays are the runtime's: a recorded step key gets its recorded reply back.
    const begun = await this.client.call<{ data: string; state: { steps: object } }>("begin", {
      workflowId,
      handoffId,
      task,
      knownTasks: [TASK],
      artifactId,
    });
    this.n = 2;
    const recorded = Object.keys(begun.state.steps).length;
    if (recorded > 0) console.log(`resuming ${workflowId}: ${recorded} steps recorded`);
    const bytes = Buffer.from(begun.data, "base64");
    const escalation = this.schemas.check<Escalation>("escalation", JSON.parse(bytes.toString()));
    const email = await this.draft(escalation);
    const team = escalation.decision.team_email;
    const payload = this.schemas.check<Record<string, string>>("tools/send_email.input", {
      to: team,
      ...email,
    });
    // The runtime checks the policy on the real recipient; an address it does not allow
    // escalates to a human, and an approval delivers this handoff again.
    const sent = await this.step<{ evidence: Evidence }>("execute", { tool: "send_email", payload });
    const refs = this.schemas.check<{ messageId: string }>("tools/send_email.output", sent.evidence.refs);
    await this.step("checkpoint", {
      name: "email-sent",
      data: { messageId: refs.messageId },
      evidenceIds: [sent.evidence.auditId],
    });
    const summary = await this.step<{ claim: { verdict: string }; workflowStatus: string }>(
      "summarize",
      {
        summary: `emailed ${team} about the escalation`,
        claim: {
          items: [
            {
              action: "send_email",
              target: `mailto:${team}`,
              status: "succeeded",
              evidenceId: sent.evidence.auditId,
              facts: { recipient: team, subject: email.subject },
            },
          ],
          remarks: `emailed ${team}`,
        },
      },
    );
    console.log(`${workflowId}: claim ${summary.claim.verdict}, workflow ${summary.workflowStatus}`);
  }

  /** The email, written by a template standing in for a model, recorded as its reasoning. */
  private async draft(escalation: Escalation): Promise<{ subject: string; body: string }> {
    const { complaint, decision, ticket } = escalation;
    const output = {
      subject: `[${decision.severity}] complaint from ${complaint.customer}`,
      body: `${complaint.text}\n\nTriage: ${decision.rationale}\nTicket: ${ticket}`,
    };
    const recorded = await this.step<{ output: { subject: string; body: string } }>("reasoning", {
      purpose: "draft",
      model: "scripted",
      output,
      usage: { inputTokens: 0, outputTokens: 0, cacheReadTokens: 0, cacheWriteTokens: 0 },
      stopReason: "end_turn",
    });
    return recorded.output; // on a replay: what was recorded the first time
  }
}

async function handle(msg: Msg, inbox: Inbox, client: RuntimeClient, schemas: Schemas) {
  let handoff: Handoff;
  try {
    handoff = schemas.check<Handoff>("Handoff", JSON.parse(msg.string()));
  } catch (error) {
    console.error(`dropping a malformed inbox message: ${error}`);
    return inbox.term(msg);
  }
  const stopBeating = inbox.beat(msg);
  try {
    await new Handling(client, schemas, handoff).run();
  } catch (error) {
    if (error instanceof Refused && !RETRYABLE.has(error.error.code)) {
      // Recorded as the step's reply: a redelivery would meet it again. A human's approval
      // (approval_required, permission_denied) delivers the handoff again by itself.
      console.warn(`${handoff.workflowId} ends for ${AGENT}: ${error.message}`);
    } else if (error instanceof SchemaError) {
      console.error(`${handoff.workflowId}: ${error.message}`);
    } else {
      console.error(`${handoff.workflowId}: ${error}; redelivering`);
      return inbox.nak(msg, 1000);
    }
  } finally {
    stopBeating();
  }
  if (!(await inbox.ack(msg))) console.warn(`${handoff.workflowId}: the ack was not confirmed`);
}

/** A deployment's `.creds` file (a NATS user JWT and its seed), or the embedded stack's
 * `{"user", "password"}` JSON file. */
function credentials(path: string): ConnectionOptions {
  const text = readFileSync(path, "utf8");
  if (path.endsWith(".creds")) return { authenticator: credsAuthenticator(Buffer.from(text)) };
  const { user, password } = JSON.parse(text);
  return { user, pass: password };
}

async function main(): Promise<void> {
  const prefix = process.env.CLAIMCHECK_PREFIX ?? "cc";
  const protocol = process.env.CLAIMCHECK_PROTOCOL_DIR ?? join(HERE, "..", "..", "docs", "protocol");
  const schemas = new Schemas(protocol);
  schemas.add("escalation", join(HERE, "escalation.schema.json"));
  // Replies may come only to this role's own inbox prefix (PROTOCOL.md section 1).
  const inboxPrefix = `_INBOX_agent-${AGENT}`;
  const nc = await connect({
    servers: (process.env.CLAIMCHECK_NATS_URL ?? "").split(","),
    ...credentials(process.env.CLAIMCHECK_CREDENTIALS ?? ""),
    inboxPrefix,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 200,
  });
  const client = new RuntimeClient(nc, schemas, prefix, AGENT, inboxPrefix);
  const inbox = new Inbox(nc, prefix, AGENT, inboxPrefix);
  let running = true;
  for (const signal of ["SIGTERM", "SIGINT"] as const) process.on(signal, () => (running = false));
  console.log(`agent ${AGENT} (TypeScript) consuming ${prefix}.handoff.${AGENT}`);
  while (running) {
    const msg = await inbox.fetch();
    if (msg !== null) await handle(msg, inbox, client, schemas);
  }
  await nc.drain();
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});

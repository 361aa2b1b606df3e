// Asking the claimcheck runtime: a NATS request on <prefix>.rt.<agent>.<op>, replies on this
// agent's own inbox prefix, waiting out a replica that says it is working and asking again
// (same body, same step key: safe) when one goes silent or NATS is briefly unavailable.
import { createInbox, type Msg, type NatsConnection } from "nats";
import type { Schemas } from "./schemas.js";

export const WORKING_HEADER = "Claimcheck-Working";
const SILENCE_MS = 3500;

/** The operation's request type and reply type, as in docs/PROTOCOL.md section 3. */
const TYPES: Record<string, [string, string]> = {
  begin: ["BeginRequest", "BeginReply"],
  reasoning: ["ReasoningRequest", "ReasoningReply"],
  execute: ["ExecuteRequest", "ExecuteReply"],
  checkpoint: ["CheckpointRequest", "Ack"],
  summarize: ["SummarizeRequest", "SummaryReply"],
};

export interface ErrorInfo {
  code: string;
  message: string;
  fields?: { field: string; message: string }[];
  retry?: { strategy: string; delaySeconds: number } | null;
}

export interface Reply {
  ok: boolean;
  result?: unknown;
  error?: ErrorInfo | null;
}

/** The runtime refused: `code` says whether asking again could help (PROTOCOL.md section 6). */
export class Refused extends Error {
  constructor(readonly error: ErrorInfo) {
    super(`${error.code}: ${error.message}`);
  }
}

class NoAnswer extends Error {}

export class RuntimeClient {
  private readonly encoder = new TextEncoder();
  private readonly decoder = new TextDecoder();

  constructor(
    private readonly nc: NatsConnection,
    private readonly schemas: Schemas,
    private readonly prefix: string,
    private readonly agent: string,
    private readonly inboxPrefix: string,
    private readonly timeoutMs = 30_000,
    private readonly patienceMs = 60_000,
  ) {}

  /** Send `op` with `body` (validated first) and return the reply (validated too). */
  async call<T>(op: string, body: Record<string, unknown>): Promise<T> {
    const [requestType, replyType] = TYPES[op];
    this.schemas.check(requestType, body);
    const reply = this.schemas.check<Reply>("Reply", await this.ask(op, body));
    if (!reply.ok) throw new Refused(reply.error as ErrorInfo);
    return this.schemas.check<T>(replyType, reply.result);
  }

  /** The first real reply, asking again while nobody answers (up to the patience). */
  private async ask(op: string, body: Record<string, unknown>): Promise<unknown> {
    const subject = `${this.prefix}.rt.${this.agent}.${op}`;
    const data = this.encoder.encode(JSON.stringify(body));
    const deadline = Date.now() + this.patienceMs;
    for (let attempt = 0; ; attempt++) {
      try {
        const reply = JSON.parse(this.decoder.decode((await this.request(subject, data)).data));
        if (reply?.error?.code !== "unavailable") return reply;
      } catch (error) {
        if (!(error instanceof NoAnswer)) throw error;
      }
      if (Date.now() > deadline) throw new Error(`the runtime did not answer ${op}`);
      // Capped exponential backoff with full jitter.
      await sleep(Math.random() * Math.min(2000, 100 * 2 ** attempt));
    }
  }

  /** One request: "still working" beats are skipped; silence or no responders is NoAnswer. */
  private request(subject: string, data: Uint8Array): Promise<Msg> {
    const inbox = createInbox(this.inboxPrefix);
    const giveUp = Date.now() + this.timeoutMs;
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout;
      const sub = this.nc.subscribe(inbox, {
        callback: (error, msg) => {
          if (error) return finish(() => reject(error));
          if (msg.headers?.get(WORKING_HEADER)) return arm();
          if (msg.headers?.code === 503) return finish(() => reject(new NoAnswer("no responders")));
          finish(() => resolve(msg));
        },
      });
      const finish = (then: () => void) => {
        clearTimeout(timer);
        sub.unsubscribe();
        then();
      };
      const arm = () => {
        clearTimeout(timer);
        const wait = Math.min(SILENCE_MS, giveUp - Date.now());
        timer = setTimeout(() => finish(() => reject(new NoAnswer("silence"))), Math.max(wait, 0));
      };
      arm();
      this.nc.publish(subject, data, { reply: inbox });
    });
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// The agent's inbox: the durable pull consumer agent-<name> on <PREFIX>_HANDOFF, which the
// runtime created. An agent may only fetch from it and acknowledge (PROTOCOL.md section 2).
import { createInbox, type Msg, type NatsConnection } from "nats";
import { sleep } from "./runtime.js";

const FETCH_EXPIRES_MS = 1000;

export class Inbox {
  private readonly next: string;

  constructor(
    private readonly nc: NatsConnection,
    prefix: string,
    agent: string,
    private readonly inboxPrefix: string,
  ) {
    this.next = `$JS.API.CONSUMER.MSG.NEXT.${prefix.toUpperCase()}_HANDOFF.agent-${agent}`;
  }

  /** The next handoff, or null after a second without one (or before the consumer exists). */
  async fetch(): Promise<Msg | null> {
    const pull = JSON.stringify({ batch: 1, expires: FETCH_EXPIRES_MS * 1_000_000 });
    const msg = await this.requestOnce(this.next, pull, FETCH_EXPIRES_MS + 2000);
    // Status messages (404, 408: nothing to deliver; 503: no consumer yet) carry no handoff.
    if (msg !== null && !msg.headers?.code) return msg;
    await sleep(200);
    return null;
  }

  /** Acknowledge and wait for the server to confirm: the handoff is done with. */
  async ack(msg: Msg): Promise<boolean> {
    return (await this.requestOnce(msg.reply as string, "+ACK", 5000)) !== null;
  }

  /** A request answered on a subscription of its own (JetStream's deliveries are not
   * routed to nats.js's shared request inbox), or null when nothing came in time. */
  private async requestOnce(subject: string, data: string, timeoutMs: number) {
    const inbox = createInbox(this.inboxPrefix);
    const sub = this.nc.subscribe(inbox, { max: 1, timeout: timeoutMs });
    this.nc.publish(subject, data, { reply: inbox });
    try {
      for await (const msg of sub) return msg;
    } catch {
      // a timeout: nothing came
    }
    return null;
  }

  /** Deliver again after `delayMs` (a redelivery may succeed: the runtime said `internal`). */
  nak(msg: Msg, delayMs: number): void {
    msg.respond(`-NAK ${JSON.stringify({ delay: delayMs * 1_000_000 })}`);
  }

  /** Drop a message that is not a handoff: no redelivery can fix it. */
  term(msg: Msg): void {
    msg.respond("+TERM");
  }

  /** "Still working" every third of the ack wait, so the handoff is not given to a replica. */
  beat(msg: Msg, ackWaitMs = 10_000): () => void {
    const timer = setInterval(() => msg.respond("+WPI"), ackWaitMs / 3);
    return () => clearInterval(timer);
  }
}

// The exported protocol (`claimcheck schemas export`, checked in as docs/protocol/), compiled
// with Ajv: every request this agent sends and every reply it reads is validated against it.
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { Ajv2020, type ValidateFunction } from "ajv/dist/2020.js";
import formats from "ajv-formats";

export class SchemaError extends Error {}

export class Schemas {
  private readonly validators = new Map<string, ValidateFunction>();
  private readonly ajv = new Ajv2020({ allErrors: true, strict: false });

  /** Every schema under `directory` (docs/protocol), named by its path without the suffix. */
  constructor(directory: string) {
    // ajv-formats is CommonJS: its function is the module's default export.
    (formats as unknown as { default: (a: Ajv2020) => void }).default(this.ajv);
    for (const [name, path] of schemaFiles(directory)) this.add(name, path);
  }

  add(name: string, path: string): void {
    this.validators.set(name, this.ajv.compile(JSON.parse(readFileSync(path, "utf8"))));
  }

  /** `value` as a `type` (Handoff, ExecuteRequest, tools/send_email.input, ...), or a SchemaError. */
  check<T>(type: string, value: unknown): T {
    const validate = this.validators.get(type);
    if (validate === undefined) throw new SchemaError(`no schema ${type}`);
    if (!validate(value)) {
      const problems = (validate.errors ?? []).map((e) => `${e.instancePath || "$"} ${e.message}`);
      throw new SchemaError(`not a valid ${type}: ${problems.join("; ")}`);
    }
    return value as T;
  }
}

function* schemaFiles(directory: string): Generator<[string, string]> {
  for (const entry of readdirSync(directory, { withFileTypes: true })) {
    const path = join(directory, entry.name);
    if (entry.isDirectory()) {
      for (const [name, inner] of schemaFiles(path)) yield [`${entry.name}/${name}`, inner];
    } else if (entry.name.endsWith(".schema.json")) {
      yield [entry.name.slice(0, -".schema.json".length), path];
    }
  }
}

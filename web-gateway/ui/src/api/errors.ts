// What the console shows of a failed call: the gRPC code's name, the message, and the violations
// the engine sends in grpc-status-details-bin (server/src/grpc/status.rs), listed per path:
// google.rpc.BadRequest field violations (INVALID_ARGUMENT: a schema or a state is wrong) and
// google.rpc.PreconditionFailure violations (FAILED_PRECONDITION: e.g. the current states a new
// schema version would break).
import { Code, ConnectError } from "@connectrpc/connect";
import { BinaryReader } from "@bufbuild/protobuf/wire";

export interface Violation {
  /** JSON pointer (or field name) the violation is about; "" for the whole document. */
  path: string;
  message: string;
}

export interface ShownError {
  /** The gRPC code as its canonical name, e.g. INVALID_ARGUMENT. */
  codeName: string;
  code: Code;
  message: string;
  violations: Violation[];
}

const BAD_REQUEST = "google.rpc.BadRequest";
const PRECONDITION_FAILURE = "google.rpc.PreconditionFailure";

/** The canonical upper-snake name of a gRPC code (Code.InvalidArgument -> INVALID_ARGUMENT). */
export function codeName(code: Code): string {
  const name = Code[code];
  if (name === undefined) return `CODE_${code}`;
  return name.replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

/** Decodes google.rpc.BadRequest { repeated FieldViolation field_violations = 1; }
 *  FieldViolation { string field = 1; string description = 2; } (later fields skipped). */
export function decodeBadRequest(bytes: Uint8Array): Violation[] {
  const out: Violation[] = [];
  const reader = new BinaryReader(bytes);
  while (reader.pos < reader.len) {
    const [field, wire] = reader.tag();
    if (field !== 1) {
      reader.skip(wire);
      continue;
    }
    const inner = new BinaryReader(reader.bytes());
    const v: Violation = { path: "", message: "" };
    while (inner.pos < inner.len) {
      const [f, w] = inner.tag();
      if (f === 1) v.path = inner.string();
      else if (f === 2) v.message = inner.string();
      else inner.skip(w);
    }
    out.push(v);
  }
  return out;
}

/** Decodes google.rpc.PreconditionFailure { repeated Violation violations = 1; }
 *  Violation { string type = 1; string subject = 2; string description = 3; }: the subject
 *  becomes the path, the description the message. */
export function decodePreconditionFailure(bytes: Uint8Array): Violation[] {
  const out: Violation[] = [];
  const reader = new BinaryReader(bytes);
  while (reader.pos < reader.len) {
    const [field, wire] = reader.tag();
    if (field !== 1) {
      reader.skip(wire);
      continue;
    }
    const inner = new BinaryReader(reader.bytes());
    const v: Violation = { path: "", message: "" };
    while (inner.pos < inner.len) {
      const [f, w] = inner.tag();
      if (f === 2) v.path = inner.string();
      else if (f === 3) v.message = inner.string();
      else inner.skip(w);
    }
    out.push(v);
  }
  return out;
}

export function toShownError(error: unknown): ShownError {
  const err = ConnectError.from(error);
  const violations: Violation[] = [];
  for (const d of err.details) {
    if (!("type" in d)) continue;
    const decode = d.type === BAD_REQUEST ? decodeBadRequest : d.type === PRECONDITION_FAILURE ? decodePreconditionFailure : undefined;
    if (decode) {
      try {
        violations.push(...decode(d.value));
      } catch {
        // A detail that does not decode is left out; the message still says what went wrong.
      }
    }
  }
  return { code: err.code, codeName: codeName(err.code), message: err.rawMessage, violations };
}

export function isCode(error: unknown, code: Code): boolean {
  return error != null && ConnectError.from(error).code === code;
}

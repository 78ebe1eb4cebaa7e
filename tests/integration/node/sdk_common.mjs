// Shared by the sdk_*.mjs drivers: runs a scenario SDK_REPEAT times (default 1, SDK_REPEAT_INTERVAL_MS
// apart), prints one JSON line with the last call's result on stdout (and every call's under
// "calls" when repeated) and exits 0; on failure prints one JSON line
// {"error", "message", "code", "status", "response"} on stderr and exits 1.
// The process exits explicitly: the SDKs' keep-alive sockets would otherwise hold it open.

function describe(e) {
  const out = {
    error: e?.name ?? "Error",
    message: String(e?.message ?? e),
  };
  // AWS SDK: Code / $metadata; gaxios: code / status / response.data; Azure: errorResponse.
  const code = e?.Code ?? e?.code ?? e?.errorCode;
  if (code !== undefined) out.code = code;
  const status = e?.$metadata?.httpStatusCode ?? e?.statusCode ?? e?.status ?? e?.response?.status;
  if (status !== undefined) out.status = status;
  if (e?.response?.data !== undefined) out.response = e.response.data;
  if (e?.errorResponse !== undefined) out.response = e.errorResponse;
  if (e?.cause) out.cause = String(e.cause?.message ?? e.cause);
  return out;
}

// The credentials the AWS SDK signed a call with, as its default chain resolved them: read from
// the request context after signing, so that asking does not run the chain a second time.
export function captureAwsIdentity(client) {
  const seen = { identity: null };
  client.middlewareStack.add((next, context) => async (args) => {
    seen.identity = context.__smithy_context?.selectedHttpAuthScheme?.identity
      ?? null;
    return next(args);
  }, { step: "finalizeRequest", name: "brokerdCaptureIdentity" });
  return () => ({
    access_key_id: seen.identity?.accessKeyId ?? null,
    expiration: seen.identity?.expiration ? seen.identity.expiration.toISOString() : null,
  });
}

export async function run(scenario) {
  try {
    const repeat = Math.max(1, Number(process.env.SDK_REPEAT || 1));
    const interval = Number(process.env.SDK_REPEAT_INTERVAL_MS || 0);
    const calls = [];
    for (let i = 0; i < repeat; i += 1) {
      if (i > 0 && interval > 0) await new Promise((r) => setTimeout(r, interval));
      calls.push(await scenario(i));
    }
    const out = { ...calls[calls.length - 1] };
    if (repeat > 1) out.calls = calls;
    process.stdout.write(`${JSON.stringify(out)}\n`);
    process.exit(0);
  } catch (e) {
    if (process.env.SDK_DEBUG) process.stderr.write(`${e?.stack ?? e}\n`);
    let line;
    try {
      line = JSON.stringify(describe(e));
    } catch {
      line = JSON.stringify({ error: "Error", message: String(e) });
    }
    process.stderr.write(`${line}\n`);
    process.exit(1);
  }
}

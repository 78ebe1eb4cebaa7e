// @aws-sdk/client-bedrock-runtime InvokeModel (Anthropic messages body) with the SDK's default
// credential chain, in the same two modes as sdk_aws_sts.mjs (credential_process profile, or
// web identity token file). The endpoint is AWS_ENDPOINT_URL_BEDROCK_RUNTIME, or the client's
// `endpoint` option when BEDROCK_ENDPOINT is set. BEDROCK_MODEL_ID and SDK_PROMPT choose the
// model and prompt. Prints {"text", "model_id", "stop_reason", "access_key_id", "expiration"}.
import { BedrockRuntimeClient, InvokeModelCommand } from "@aws-sdk/client-bedrock-runtime";

import { captureAwsIdentity, run } from "./sdk_common.mjs";

const modelId = process.env.BEDROCK_MODEL_ID || "anthropic.claude-3-5-haiku-20241022-v1:0";
const prompt = process.env.SDK_PROMPT || "hello from brokerd";
const client = new BedrockRuntimeClient(
  process.env.BEDROCK_ENDPOINT ? { endpoint: process.env.BEDROCK_ENDPOINT } : {},
);
const identity = captureAwsIdentity(client);

await run(async () => {
  const out = await client.send(new InvokeModelCommand({
    modelId,
    contentType: "application/json",
    accept: "application/json",
    body: JSON.stringify({
      anthropic_version: "bedrock-2023-05-31",
      max_tokens: 64,
      messages: [{ role: "user", content: [{ type: "text", text: prompt }] }],
    }),
  }));
  const reply = JSON.parse(new TextDecoder().decode(out.body));
  return {
    text: reply.content.map((c) => c.text).join(""),
    model_id: modelId,
    stop_reason: reply.stop_reason,
    ...identity(),
  };
});

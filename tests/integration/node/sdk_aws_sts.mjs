// @aws-sdk/client-sts GetCallerIdentity with the SDK's default credential chain, configured only
// through the environment, as an application would be:
//   credential_process: AWS_CONFIG_FILE (a profile with credential_process = COMMAND), AWS_PROFILE
//   web identity:       AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN, AWS_ROLE_SESSION_NAME
//                       (the SDK's inner STS client takes its endpoint from AWS_ENDPOINT_URL_STS)
// and AWS_REGION, AWS_ENDPOINT_URL_STS for the call itself.
// Prints {"arn", "account", "user_id", "access_key_id", "expiration"}.
import { GetCallerIdentityCommand, STSClient } from "@aws-sdk/client-sts";

import { captureAwsIdentity, run } from "./sdk_common.mjs";

const client = new STSClient({});
const identity = captureAwsIdentity(client);

await run(async () => {
  const out = await client.send(new GetCallerIdentityCommand({}));
  return {
    arn: out.Arn,
    account: out.Account,
    user_id: out.UserId,
    ...identity(),
  };
});

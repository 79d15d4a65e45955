"""Drives the emulator with the official Databricks SDK for Python, as a real workspace."""
import json
import sys
import uuid

from databricks.sdk import WorkspaceClient

host, client_id, client_secret, endpoint, instance = sys.argv[1:6]
w = WorkspaceClient(host=host, client_id=client_id, client_secret=client_secret)
me = w.current_user.me()
out = {"me": me.user_name}
cred = w.postgres.generate_database_credential(endpoint=endpoint)
out["autoscaling_token_len"] = len(cred.token)
out["autoscaling_expire_time"] = str(cred.expire_time)
cred = w.database.generate_database_credential(instance_names=[instance], request_id=str(uuid.uuid4()))
out["provisioned_token_len"] = len(cred.token)
out["provisioned_expiration_time"] = str(cred.expiration_time)
print(json.dumps(out))

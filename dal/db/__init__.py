"""The connection layer: settings, DSNs, the pool owner and its replicas, the one statement
runner, driver failures and their translation, the embedded server, server administration, the
production guard and the partition rule.  It imports no other ``dal`` sub-package."""

"""Files in, files out: adaptation, prediction, source training and registration as plain
library functions (the CLI and the app call these)."""

# Handlers for the shell bootstrap. Each gets the event file as $1 and writes the
# response (or error document) to stdout; logs go to stderr.

handler() {
  cat "$1"
}

fail() {
  echo "shell: about to fail" >&2
  printf '{"errorMessage":"shell failure","errorType":"ShellError"}'
  return 1
}

chatty() {
  echo "shell: first log line" >&2
  echo "shell: second log line" >&2
  printf '"logged"'
}

die() {
  echo "shell: exiting mid-invoke" >&2
  exit 7
}

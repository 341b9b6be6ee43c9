#!/usr/bin/env bash
# Trunk post_build hook (Trunk.toml): a release build also builds the first page, welcome.html
# (frontend/src/bin/welcome.rs: the welcome form alone), into the same bundle, so a first visit
# to `/` loads a fraction of the whole app. Its files have hashed names like the app's; the
# stylesheet and icon are the same files. Debug builds (`trunk serve`) skip it: the whole app
# shows the welcome form at `/` too, and the server falls back to index.html without it.
set -euo pipefail
[ "${NOOM_WELCOME_PAGE:-}" = building ] && exit 0 # the inner build runs this hook too
[ "${TRUNK_PROFILE:-}" = release ] || exit 0
cd "$(dirname "$0")/.."
stage="${TRUNK_STAGING_DIR:?run by trunk as a post_build hook}"
inner="$stage/.welcome"
# `--public-url /`: its files are served beside the app's, at the root.
NOOM_WELCOME_PAGE=building trunk build --release --offline --public-url / \
  --html-output welcome.html --dist "$inner" welcome.html
for file in "$inner"/*; do
  name=$(basename "$file")
  if [ -e "$stage/$name" ]; then
    # Hashed names: the same name is the same content (the stylesheet, the icon).
    cmp -s "$file" "$stage/$name" || { echo "error: $name differs between the two pages" >&2; exit 1; }
  else
    mv "$file" "$stage/$name"
  fi
done
rm -rf "$inner"

# The whole app's script and wasm, named (without a leading `/`, so nothing counts them as the
# first page's own files) in a <meta> for the first page to fetch ahead once the person starts
# typing a room name (frontend/src/welcome.rs): the room then opens from the cache.
app_js=$(sed -n "s|.*from '/\([^']*\.js\)'.*|\1|p" "$stage/index.html" | head -n 1)
app_wasm=$(sed -n "s|.*module_or_path: '/\([^']*\.wasm\)'.*|\1|p" "$stage/index.html" | head -n 1)
if [ -z "$app_js" ] || [ -z "$app_wasm" ] || [ ! -f "$stage/$app_js" ] || [ ! -f "$stage/$app_wasm" ]; then
  echo "error: cannot find the whole app's script and wasm in index.html ($app_js, $app_wasm)" >&2
  exit 1
fi
[ "$(grep -c '</head>' "$stage/welcome.html")" = 1 ] || { echo "error: welcome.html has no single </head>" >&2; exit 1; }
sed -i "s|</head>|<meta name=\"noom-app\" content=\"$app_js $app_wasm\" /></head>|" "$stage/welcome.html"

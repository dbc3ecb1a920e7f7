// Package browser tests capsule's page (GET / of the API) in headless
// Chromium, driven over the Chrome DevTools protocol with chromedp (pure
// Go, no Node.js): the page must show every backup the test created, with
// its status and a verification badge that says what was proven
// (restored, checksum only, failed, never: each its own words and
// color), a failure card on each source whose backup failed (the first
// line of the error as text, never markup, and when; sources that never
// succeeded too), draw each source's timeline, fetch nothing but the API,
// and log no error. A screenshot is kept as a test artifact
// ($CAPSULE_ARTIFACTS/page.png, else e2e/artifacts/page.png) and checked:
// the failure card is drawn in the failure colors and the four badges in
// four different colors.
//
// Chromium comes from Debian (scripts/install-browser.sh); the test looks
// at $CAPSULE_CHROMIUM, then chromium, chromium-browser and google-chrome
// on $PATH, and skips when none is there.
//
// This directory is a Go module of its own (its go.mod replaces
// github.com/cnvrg/capsule with the checkout around it), so that chromedp
// stays out of capsule's requirements; go test ./... from the repository
// root does not reach it. Run it with: cd e2e/browser && go test ./...
// (scripts/test.sh does).
package browser

package api

import (
	"embed"
	"io/fs"
	"mime"
	"net/http"
	"path"
)

// uiFiles is the page: plain HTML, CSS and JavaScript with no build step
// and nothing fetched from anywhere but this API.
//
//go:embed ui/index.html ui/app.js ui/style.css
var uiFiles embed.FS

// pageCSP lets the page load only its own files and call only this API.
const pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func servePage(w http.ResponseWriter, _ *http.Request, ui fs.FS, name string) {
	data, err := fs.ReadFile(ui, name)
	if err != nil {
		writeError(w, http.StatusNotFound, CodeNotFound, "", "no such file")
		return
	}
	ctype := mime.TypeByExtension(path.Ext(name))
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	h := w.Header()
	h.Set("Content-Type", ctype)
	h.Set("Content-Security-Policy", pageCSP)
	h.Set("Cache-Control", "no-cache")
	h.Set("Referrer-Policy", "no-referrer")
	w.Write(data)
}

// Package docs holds the project's documentation (Markdown, the architecture diagram) and the
// tests that keep it true to the code, the shipped rules and its own links. It has no code.
package docs

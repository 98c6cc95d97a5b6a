// Package bundle handles the files sent with a command and brought back:
// archives unpacked safely into a work directory.
package bundle

/* Private: finding and loading plugins.
 *
 * Search path, in order: the build tree's plugin folders (when running from
 * a build), the installed plugin directory, then each directory of
 * UNLEARN_PLUGIN_PATH (colon-separated). Each directory is searched for
 * <name>.so directly and in its models/, methods/, datasets/, metrics/ and
 * goals/ subfolders. The current directory is never searched implicitly. */
#ifndef UL_PLUGIN_LOADER_H
#define UL_PLUGIN_LOADER_H

#include "unlearn/plugin.h"

typedef struct ul_plugin {
    const ul_plugin_desc *desc;
    void *handle;  /* dlopen handle */
    char *path;
} ul_plugin;

const char *ul_kind_name(uint32_t kind); /* "model", ... or "unknown" */

/* Loads one plugin file and validates it: entry symbol present, ABI version
 * compatible (checked before any other field is read), struct sizes,
 * kind known, name equal to the file stem, schema well-formed, vtable
 * complete. On failure nothing stays loaded. */
int ul_plugin_open(const char *path, ul_plugin *out, ul_error *err);
void ul_plugin_close(ul_plugin *p);

/* Finds <name>.so on the search path and loads it; when kind is non-zero
 * the plugin must be of that kind. A plugin that is not found gets a
 * message listing the known plugins of that kind and the directories
 * searched. Loaded plugins are cached for the life of the process. */
int ul_plugin_find(uint32_t kind, const char *name, const ul_plugin **out, ul_error *err);

/* Every plugin file on the search path (first one wins per name). Broken
 * plugins are reported through on_error and skipped. */
typedef void (*ul_plugin_visit_fn)(const ul_plugin *p, void *user);
typedef void (*ul_plugin_error_fn)(const char *path, const ul_error *err, void *user);
void ul_plugin_scan(ul_plugin_visit_fn visit, ul_plugin_error_fn on_error, void *user);

/* The directories searched, for messages (malloc'ed array of strings). */
size_t ul_plugin_search_dirs(char ***dirs);
void ul_plugin_unload_all(void);

#endif

/* version.h — the one place that names the software and its version
 * (XEP-0092 software version, logs, sbctl). */
#ifndef SB_VERSION_H
#define SB_VERSION_H

#define SB_SOFTWARE_NAME "Switchboard"
#define SB_VERSION "0.2.0"

#endif

/* placeholder: replaced by the CLI */
#include <stdio.h>
int main(void) { puts("ncmi"); return 0; }

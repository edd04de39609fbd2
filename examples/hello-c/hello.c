/* The classic hello example: a static C program that needs nothing from
 * its image, so it runs FROM scratch. */
#include <stdio.h>

int main(int argc, char **argv)
{
    const char *who = argc > 1 ? argv[1] : "world";
    printf("hello, %s!\n", who);
    return 0;
}
